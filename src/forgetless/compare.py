"""Several methods x seeds on one benchmark: a markdown table (mean +- std) and PNG plots.

Runs are independent processes' worth of work (a run is a pure function of its arguments); each lands
in ``OUT/<method>/seed-<s>/`` and a finished one is reused, so an interrupted comparison picks up where
it stopped. A run that diverges does not stop the comparison: it is shown as "diverged" in the table and
left out of the means and plots.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import fileio, runner
from .errors import ConfigError, DivergedError


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
    ``overwrite``). A diverged run gives its partial results, marked ``"diverged"``.

    Reuse reads results.json without the run's lock: it is written atomically, and a run still in
    progress is not complete, so it goes on to runner.run, which takes the lock (and is refused if the
    run is alive elsewhere)."""
    try:
        return _train_or_reuse(kwargs)
    except DivergedError as err:
        path = Path(kwargs["out"]) / "results.json"
        partial = fileio.read_json(path) if path.exists() else {}
        return {**partial, "diverged": err.marker(), "complete": False}


def _train_or_reuse(kwargs: dict[str, Any]) -> dict[str, Any]:
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
    finished = {m: [r for r in rs if not r.get("diverged")] for m, rs in by_method.items()}
    if plots and any(finished.values()):
        from . import plots as plotting

        plotting.accuracy_heatmaps(finished, out / "accuracy_matrices.png")
        plotting.accuracy_curves(finished, out / "accuracy_curves.png")
    print(table)
    return summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the runs that finished; diverged runs are counted, not averaged (their numbers are those
    of the last task before the divergence)."""
    keys = ["final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy"]
    diverged = [r for r in results if r.get("diverged")]
    results = [r for r in results if not r.get("diverged")]
    out: dict[str, Any] = {}
    for k in keys:
        m, s = mean_std([r.get(k) for r in results])
        out[k] = None if math.isnan(m) else {"mean": m, "std": s}
    out["train_seconds"] = mean_std([r["time"]["train_seconds"] for r in results])[0]
    out["n_runs"] = len(results)
    out["n_diverged"] = len(diverged)
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
        n_diverged = sum(1 for r in rs if r.get("diverged"))
        rs = [r for r in rs if not r.get("diverged")]
        if not rs:
            lines.append(f"| {m} | " + " | ".join(["diverged"] * 6) + " |")
            continue
        cells = [fmt([r.get(k) for r in rs]) for k in
                 ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy")]
        if n_diverged:
            cells[0] += f" ({n_diverged} of {n_diverged + len(rs)} seeds diverged)"
        secs = mean_std([r["time"]["train_seconds"] for r in rs])[0]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {secs:.1f} |")
    return "\n".join(lines) + "\n"
