"""The CUDA path (skipped on a machine without CUDA): runs train on the GPU, close to the CPU's numbers, under
float32 and bf16, without per-step host synchronisation. bench/gpu_check.py is the longer check."""

from __future__ import annotations

import warnings

import pytest
import torch

from forgetless import runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")

SHORT = {"iterations": 40, "batch_size": 32, "hidden": (64,)}


@pytest.mark.parametrize("name", ["finetune", "ewc", "hat", "packnet", "hnet"])
def test_cuda_runs_are_close_to_cpu_runs(name):
    kw = dict(scenario="task", seed=0, config={k: v for k, v in SHORT.items() if not (name == "hat" and
                                                                                        k == "iterations")},
              quiet=True)
    cpu = runner.run(name, "split-digits", device="cpu", **kw)
    cuda = runner.run(name, "split-digits", device="cuda", **kw)
    bf16 = runner.run(name, "split-digits", device="cuda", amp="bf16", **kw)
    assert cuda["provenance"]["device"].startswith("cuda")
    assert abs(cuda["final_accuracy"] - cpu["final_accuracy"]) < 0.05
    assert abs(bf16["final_accuracy"] - cuda["final_accuracy"]) < 0.05 and bf16["amp"] == "bf16"


def _syncs(steps: int) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            runner.run("finetune", "split-digits", scenario="task", device="cuda", quiet=True, log_every=10**6,
                       config={**SHORT, "iterations": steps})  # log points: each task's first and last step
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_a_training_step_does_not_synchronise_the_host():
    assert _syncs(60) == _syncs(30)  # syncs at log points and task ends only, not per step
