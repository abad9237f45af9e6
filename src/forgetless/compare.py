"""Several methods x seeds on one benchmark: a markdown table (mean +- std) and PNG plots.

Runs are independent processes' worth of work (a run is a pure function of its arguments); each lands
in ``OUT/<method>/seed-<s>/`` and a finished one is reused, so an interrupted comparison picks up where
it stopped.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from . import fileio, runner
from .errors import ConfigError
from .sweep import RunsFailedError, finished_run, is_failure, run_many

__all__ = ["compare", "finished_run", "fmt", "mean_std", "run_many", "summarize", "table_markdown"]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float | None], scale: float = 100.0, digits: int = 2) -> str:
    m, s = mean_std([v for v in values if v is not None])
    if math.isnan(m):
        return "n/a"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def compare(benchmark: str, methods: list[str], seeds: list[int], out: str | Path, scenario: str = "class",
            config: dict[str, Any] | None = None, bench_options: dict[str, Any] | None = None,
            method_configs: dict[str, dict[str, Any]] | None = None, workers: int = 1, plots: bool = True,
            sweep: dict[str, Any] | None = None, **run_kwargs: Any) -> dict[str, Any]:
    """``sweep``: options of :func:`sweep.run_many` (backend, address, cpus_per_run, gpus_per_run). Runs that
    fail are marked in the table and summary.json, then :class:`sweep.RunsFailedError` is raised."""
    if not methods:
        raise ConfigError("--methods needs at least one method")
    validate(benchmark, methods, scenario, config, bench_options, method_configs, run_kwargs.get("amp", "none"))
    out = Path(out)
    jobs = []
    for m in methods:
        for s in seeds:
            jobs.append(dict(method=m, benchmark=benchmark, scenario=scenario, seed=s,
                             config={**(config or {}), **((method_configs or {}).get(m, {}))},
                             bench_options=bench_options, out=out / m / f"seed-{s}", **run_kwargs))
    results = run_many(jobs, workers, **(sweep or {}))
    by_method: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    failed: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for job, res in zip(jobs, results, strict=True):
        (failed if is_failure(res) else by_method)[job["method"]].append(res)
    table = table_markdown(benchmark, scenario, seeds, by_method, failed)
    fileio.write_text(out / "table.md", table)
    summary = {"benchmark": benchmark, "scenario": scenario, "seeds": seeds,
               "methods": {m: summarize(rs, failed[m]) for m, rs in by_method.items()}}
    fileio.write_json(out / "summary.json", summary)
    # diverged runs are counted in the table, not drawn: their numbers stop at the task before the divergence
    plotted = {m: [r for r in rs if not r.get("diverged")] for m, rs in by_method.items()}
    if plots and (plotted := {m: rs for m, rs in plotted.items() if rs}):
        from . import plots as plotting

        plotting.accuracy_heatmaps(plotted, out / "accuracy_matrices.png",
                                   title=f"{benchmark}, {scenario}-IL, seeds {','.join(map(str, seeds))}")
        plotting.accuracy_curves(plotted, out / "accuracy_curves.png")
    print(table)
    if failures := [f for fs in failed.values() for f in fs]:
        raise RunsFailedError(failures, len(jobs))
    return summary


def validate(benchmark: str, methods: list[str], scenario: str, config: dict[str, Any] | None,
             bench_options: dict[str, Any] | None, method_configs: dict[str, dict[str, Any]] | None,
             amp: str = "none") -> None:
    """Every method, scenario and key checked before any run starts (a typo must not surface after an hour of
    training)."""
    unknown = [m for m in (method_configs or {}) if m not in methods]
    if unknown:
        raise ConfigError(f"per-method options for {', '.join(unknown)}, which is not in --methods "
                          f"({', '.join(methods)})")
    for m in methods:
        runner.check_options(m, benchmark, scenario, {**(config or {}), **((method_configs or {}).get(m, {}))},
                             bench_options, amp)


def cpu_seconds(result: dict[str, Any]) -> float | None:
    """A run's training CPU time: what compares runs fairly when several share the cores (None for runs made
    before it was recorded)."""
    return result["time"].get("train_cpu_seconds")


def summarize(results: list[dict[str, Any]], failed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    keys = ["final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy"]
    diverged = [r for r in results if r.get("diverged")]  # counted, not averaged
    results = [r for r in results if not r.get("diverged")]
    out: dict[str, Any] = {}
    for k in keys:
        m, s = mean_std([r.get(k) for r in results])
        out[k] = None if math.isnan(m) else {"mean": m, "std": s}
    secs = mean_std([r["time"]["train_seconds"] for r in results])[0]
    out["train_seconds"] = None if math.isnan(secs) else secs
    cpu = mean_std([cpu_seconds(r) for r in results])[0]
    out["train_cpu_seconds"] = None if math.isnan(cpu) else cpu
    out["n_runs"] = len(results)
    out["n_diverged"] = len(diverged)
    if failed:  # absent when every run finished, so summary.json is unchanged then
        out["failed"] = [{k: f[k] for k in ("seed", "out", "error")} for f in failed]
    return out


def table_markdown(benchmark: str, scenario: str, seeds: list[int], by_method: dict[str, list[dict[str, Any]]],
                   failed: dict[str, list[dict[str, Any]]] | None = None) -> str:
    lines = [
        f"### {benchmark}, {scenario}-incremental, seeds {','.join(map(str, seeds))}",
        "",
        "| method | final accuracy (%) | avg. incremental acc. (%) | forgetting (%) | BWT (%) "
        "| task inference (%) | train CPU time (s) | train wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, rs in by_method.items():
        n_failed = len((failed or {}).get(m, []))
        name = f"{m} ({n_failed} of {n_failed + len(rs)} runs failed)" if n_failed else m
        n_diverged = sum(1 for r in rs if r.get("diverged"))
        rs = [r for r in rs if not r.get("diverged")]
        if not rs and (n_failed or n_diverged):
            lines.append(f"| {name} | " + " | ".join(["failed" if n_failed else "diverged"] * 7) + " |")
            continue
        cells = [fmt([r.get(k) for r in rs]) for k in
                 ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy")]
        if n_diverged:
            cells[0] += f" ({n_diverged} of {n_diverged + len(rs)} seeds diverged)"
        secs = mean_std([r["time"]["train_seconds"] for r in rs])[0]
        cpu = mean_std([cpu_seconds(r) for r in rs])[0]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cpu:.1f} | {secs:.1f} |")
    return "\n".join(lines) + "\n"
