"""No method reads a tensor back to the host at every training step (on a GPU each read stalls the host until
the device has caught up). Counted on the CPU: every ``.item()``, ``bool()``, ``float()``, ``int()``,
``.tolist()``, ``.numpy()`` and ``.cpu()`` made from forgetless's own code while a method learns, at two step
budgets inside one epoch with log points only at a task's first and last step. A read whose count grows
with the steps is a per-step read. Reads at task boundaries, epoch ends and log points do not grow.

What this cannot see: data-dependent shapes inside torch (``nonzero``, boolean indexing) that a CUDA device
also synchronises on; ``bench/gpu_check.py`` counts those with ``torch.cuda.set_sync_debug_mode`` on a GPU."""

from __future__ import annotations

import collections
import dataclasses
import traceback

import pytest
import torch

from forgetless.methods import base as mbase
from forgetless.training import Context

from conftest import synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")
# Reads of tensors that live on the host by construction, so they never wait for a device.
HOST_RESIDENT = {
    ("tolist", "forgetless/memory/hnet_vae.py", "sample"): "the replay plan (task per sample) is a CPU tensor",
    ("cpu", "forgetless/memory/hnet_vae.py", "sample"): "the same plan: a no-op for the CPU tensor replay() makes",
}
STEPS = (10, 20)  # both inside the first epoch (800 training samples per task, batch 16)


class _Counter:
    def __init__(self, monkeypatch) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.on = False
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, original):
        def read(tensor, *args, **kwargs):
            if self.on:
                caller = traceback.extract_stack(limit=2)[0]
                if "src/forgetless" in caller.filename:
                    path = "forgetless/" + caller.filename.split("src/forgetless/")[-1]
                    self.counts[(name, path, caller.name, caller.lineno)] += 1
            return original(tensor, *args, **kwargs)
        return read


def _learn(name: str, steps: int, counter: _Counter) -> collections.Counter:
    cls = mbase.METHODS[name].cls
    scenario = "task" if "task" in cls.scenarios else cls.scenarios[0]
    bench = synthetic_benchmark(scenario, n_tasks=2, per_class=400, shape=(1, 8, 8))
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert "iterations" in fields, f"{name}: no step budget to vary"
    small = {"iterations": steps, "batch_size": 16, "hidden": (100, 100), "epochs": 1}
    torch.manual_seed(0)
    model = cls(bench.info(), mbase.resolve_config(name, bench.info(), {k: v for k, v in small.items()
                                                                        if k in fields}))
    counter.counts.clear()
    for i, task in enumerate(bench.tasks):
        model.train()
        counter.on = True
        try:
            model.learn(task, Context(generator=torch.Generator().manual_seed(i), task_index=i, n_tasks=2,
                                      log_every=10**6))
        finally:
            counter.on = False
    return collections.Counter(counter.counts)


@pytest.mark.parametrize("name", list(mbase.METHODS))
def test_no_method_reads_tensors_back_at_every_step(name, monkeypatch):
    counter = _Counter(monkeypatch)
    few, more = (_learn(name, steps, counter) for steps in STEPS)
    per_step = {site: (few.get(site, 0), n) for site, n in more.items()
                if n > few.get(site, 0) and site[:3] not in HOST_RESIDENT}
    assert not per_step, f"{name} reads tensors back at every step: " + ", ".join(
        f"{read}() at {path}:{line} in {func} ({a} reads at {STEPS[0]} steps, {b} at {STEPS[1]})"
        for (read, path, func, line), (a, b) in per_step.items())


def test_the_counter_sees_a_per_step_read(monkeypatch):
    """The test above can fail: a loop that logs (reads its loss back) at every step is caught."""
    monkeypatch.setattr(Context, "should_log", lambda self, batch: True)
    counter = _Counter(monkeypatch)
    few, more = (_learn("finetune", steps, counter) for steps in STEPS)
    grown = {site[:3] for site, n in more.items() if n > few.get(site, 0)}
    assert ("item", "forgetless/training/context.py", "log") in grown
