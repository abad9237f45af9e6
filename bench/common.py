"""Shared helpers for speed benchmarks (timings are measured here, never asserted in tests)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from forgetless import runner


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{device}, Python {platform.python_version()}")


def time_run(method: str, benchmark: str, scenario: str = "class", config: dict[str, Any] | None = None,
             bench_options: dict[str, Any] | None = None, data_root: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Run ``method`` once and report seconds per task (mean over tasks after the first, which also pays
    for warm-up) and training samples per second."""
    result = runner.run(method, benchmark, scenario=scenario, config=config or {}, bench_options=bench_options or {},
                        data_root=data_root, device=device, quiet=True)
    per_task = result["time"]["per_task_seconds"]
    steady = per_task[1:] or per_task
    cfg = result["config"]
    samples = _samples_per_task(result, cfg)
    return {
        "method": method, "benchmark": benchmark, "scenario": scenario,
        "backbone": cfg.get("backbone") or "default",
        "seconds_per_task": statistics.fmean(steady),
        "samples_per_second": samples / statistics.fmean(steady) if samples else None,
        "final_accuracy": result.get("final_accuracy"),
    }


def _samples_per_task(result: dict[str, Any], cfg: dict[str, Any]) -> float | None:
    iterations, batch = cfg.get("iterations"), cfg.get("batch_size")
    if iterations and batch:
        return float(iterations * batch)
    return None


def timed(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3,
          clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn()`` in seconds: wall time, or ``clock=time.thread_time`` for this thread's CPU time
    (steadier when other jobs share the cores)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def cpu_per_task(name: str, bench, config: dict[str, Any], device: str = "cpu") -> list[float]:
    """This process's CPU seconds in ``learn`` for every task of ``bench`` (steadier than wall time when other
    jobs share the machine). Callers usually drop task 1, which also pays for warm-up."""
    from forgetless import methods
    from forgetless.training import Context

    torch.manual_seed(0)
    method = methods.create(name, bench.info(), **config).to(device)
    seconds = []
    for i, task in enumerate(bench.tasks):
        ctx = Context(device=torch.device(device), generator=torch.Generator().manual_seed(i), task_index=i,
                      n_tasks=len(bench))
        t0 = time.process_time()
        method.learn(task.to(device), ctx)
        seconds.append(time.process_time() - t0)
    return seconds

