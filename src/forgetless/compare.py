"""Several methods x seeds on one benchmark: a markdown table (mean +- std) and PNG plots.

Runs are independent processes' worth of work (a run is a pure function of its arguments); each lands
in ``OUT/<method>/seed-<s>/`` and a finished one is reused, so an interrupted comparison picks up where
it stopped.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import fileio, runner
from .errors import ConfigError


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


def finished_run(out: str | Path) -> dict[str, Any] | None:
    """The results of the finished run in ``out``, or None (absent or partial)."""
    path = Path(out) / "results.json"
    if not path.exists():
        return None
    result = fileio.read_json(path)
    return result if result.get("complete") else None


def _run_one(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Reuse a finished run made with the same settings, resume a partial one, else start it (unless
    ``overwrite``)."""
    if not kwargs.get("overwrite"):
        if (existing := finished_run(kwargs["out"])) is not None:
            try:
                runner.check_same_run(existing, **kwargs)
            except ConfigError as err:
                raise ConfigError(f"{kwargs['out']}: {err}") from None
            return existing
        if (Path(kwargs["out"]) / "results.json").exists():
            kwargs = {**kwargs, "resume": True}
    return runner.run(**kwargs)


def run_many(jobs: list[dict[str, Any]], workers: int = 1) -> list[dict[str, Any]]:
    """Run each job (keyword arguments of :func:`runner.run`), in ``workers`` processes if > 1."""
    if workers <= 1 or len(jobs) <= 1:
        return [_run_one(j) for j in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run_one, jobs))


def compare(benchmark: str, methods: list[str], seeds: list[int], out: str | Path, scenario: str = "class",
            config: dict[str, Any] | None = None, bench_options: dict[str, Any] | None = None,
            method_configs: dict[str, dict[str, Any]] | None = None, workers: int = 1, plots: bool = True,
            **run_kwargs: Any) -> dict[str, Any]:
    if not methods:
        raise ConfigError("--methods needs at least one method")
    out = Path(out)
    jobs = []
    for m in methods:
        for s in seeds:
            jobs.append(dict(method=m, benchmark=benchmark, scenario=scenario, seed=s,
                             config={**(config or {}), **((method_configs or {}).get(m, {}))},
                             bench_options=bench_options, out=out / m / f"seed-{s}", **run_kwargs))
    results = run_many(jobs, workers)
    by_method: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for job, res in zip(jobs, results, strict=True):
        by_method[job["method"]].append(res)
    table = table_markdown(benchmark, scenario, seeds, by_method)
    fileio.write_text(out / "table.md", table)
    summary = {"benchmark": benchmark, "scenario": scenario, "seeds": seeds,
               "methods": {m: summarise(rs) for m, rs in by_method.items()}}
    fileio.write_json(out / "summary.json", summary)
    if plots:
        from . import plots as plotting

        plotting.accuracy_heatmaps(by_method, out / "accuracy_matrices.png")
        plotting.accuracy_curves(by_method, out / "accuracy_curves.png")
    print(table)
    return summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy"]
    out: dict[str, Any] = {}
    for k in keys:
        m, s = mean_std([r.get(k) for r in results])
        out[k] = None if math.isnan(m) else {"mean": m, "std": s}
    out["train_seconds"] = mean_std([r["time"]["train_seconds"] for r in results])[0]
    out["n_runs"] = len(results)
    return out


def table_markdown(benchmark: str, scenario: str, seeds: list[int], by_method: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"### {benchmark}, {scenario}-incremental, seeds {','.join(map(str, seeds))}",
        "",
        "| method | final accuracy (%) | avg. incremental acc. (%) | forgetting (%) | BWT (%) "
        "| task inference (%) | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, rs in by_method.items():
        cells = [fmt([r.get(k) for r in rs]) for k in
                 ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy")]
        secs = mean_std([r["time"]["train_seconds"] for r in rs])[0]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {secs:.1f} |")
    return "\n".join(lines) + "\n"
