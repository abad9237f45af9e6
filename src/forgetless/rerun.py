"""Re-run one task of a finished run from the checkpoint before it, with some method options changed.

For an option that nothing before the task depends on, this gives exactly the row a whole run with that
option would give for that task, at the cost of one task: the task's seed and random streams are the
runner's. DGM's classifier extensions (``classifier_ema``, ``pseudo_selection``, ``consolidation_*``) are
such options: they act on a copy of the discriminator that only predicts, and a new task trains a fresh one
(``tests/test_dgm.py`` checks the equality). For any other option the result is a what-if, not a run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, config, runner
from .benchmarks.base import Benchmark
from .errors import ConfigError
from .methods import base as mbase


def rerun_task(run_dir: str | Path, task: int, overrides: dict[str, Any] | None = None,
               data_root: str | None = None, benchmark: Benchmark | None = None
               ) -> tuple[mbase.Method, Benchmark, float]:
    """The method after re-learning ``task`` (1-based) from ``run_dir/checkpoints/task-(task-1).pt`` (a run
    written with ``keep_checkpoints``) with ``overrides`` applied to its options, the run's benchmark, and the
    task's training CPU seconds. CPU only. ``benchmark``: the run's benchmark object, when it was not a
    registered name."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    seed, i = int(results["seed"]), task - 1
    bench, _, template = runner._build(results["method"], benchmark or results["benchmark"], results["scenario"],
                                       seed, None, results["benchmark_options"], data_root, None)
    if not 1 <= task <= len(bench):
        raise ConfigError(f"task must be 1..{len(bench)}, got {task}")
    model = template
    if i > 0:
        path = run_dir / "checkpoints" / f"task-{i}.pt"
        if not path.exists():
            raise ConfigError(f"{path} is missing: re-running task {task} needs the run's checkpoint of task {i} "
                              f"(write the run with --keep-checkpoints)")
        model = checkpoint.read(path, template=template)["method"]
    if overrides and getattr(model, "config", None) is not None:
        model.config = config.build(type(model.config), {**config.to_dict(model.config), **overrides})
    device = torch.device("cpu")
    info = bench.info()
    ctx = mbase.Context(device=device, generator=runner.task_generator(seed, i),
                        task_index=i, n_tasks=len(bench), probe=runner._probe(model, bench, info, i, device))
    model.train()
    start = time.process_time()
    model.learn(bench.tasks[i].to(device), ctx)
    return model, bench, time.process_time() - start
