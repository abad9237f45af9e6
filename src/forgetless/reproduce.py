"""``forgetless reproduce CONFIG``: run the rows of a published table and print ours beside the paper's.

A config is YAML::

    title: Split MNIST, Table 1 of von Oswald et al. (2020)
    runtime: "measured: ~6 min per run on 2 CPU cores (docs/hnet.md)"   # printed by --dry-run and at the start
    source: 003_e0797c0d24809c92.txt, Table 1
    seeds: [0, 1, 2]
    metric: final_accuracy          # default metric of every row (see METRICS)
    defaults:                       # shared by every row; a row's own keys win
      benchmark: split-mnist
      bench: {}
      set: {iterations: 2000}
    runs:
      - label: S-CL1 HNET
        method: hnet
        scenario: task
        set: {beta: 0.01}
        paper: 99.79                # or {mean: 99.79, std: 0.01}; percent for accuracies

Every row becomes one ``forgetless run`` per seed under ``OUT/<label>/seed-<s>`` (finished runs are
reused), so a reproduction interrupted half-way continues where it stopped.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from . import fileio
from .compare import mean_std
from .errors import ConfigError
from .sweep import RunsFailedError, finished_run, is_failure, run_many

PERCENT_METRICS = {"final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy"}
OTHER_METRICS = {"macs_per_sample", "final_mse"}
ROW_KEYS = {"label", "method", "benchmark", "scenario", "set", "bench", "paper", "metric", "seeds", "note"}
# package data: found by name from a source checkout and from an installed wheel alike
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def find_config(name: str) -> Path:
    """A path, or the name of one of the package's configs (``forgetless list configs``; with or without .yaml;
    ``configs/NAME.yaml``, the path in a source checkout before configs became package data, also works)."""
    base = Path(name).name
    for candidate in (Path(name), CONFIG_DIR / base, CONFIG_DIR / f"{base}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"reproduction config {name!r} not found; valid: {', '.join(available) or 'a YAML path'}")


def load_config(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            conf = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("runs"), list) or not conf["runs"]:
        raise ConfigError(f"{path}: a reproduction config needs a non-empty 'runs' list")
    defaults = conf.get("defaults", {}) or {}
    rows = []
    for i, row in enumerate(conf["runs"]):
        unknown = set(row) - ROW_KEYS
        if unknown:
            raise ConfigError(f"{path}: run {i + 1} has unknown keys {sorted(unknown)}; valid: {sorted(ROW_KEYS)}")
        merged = {**{k: v for k, v in defaults.items() if k not in ("set", "bench")}, **row}
        merged["set"] = {**(defaults.get("set") or {}), **(row.get("set") or {})}
        merged["bench"] = {**(defaults.get("bench") or {}), **(row.get("bench") or {})}
        merged.setdefault("metric", conf.get("metric", "final_accuracy"))
        merged.setdefault("scenario", "class")
        merged.setdefault("seeds", conf.get("seeds", [0]))
        for key in ("label", "method", "benchmark"):
            if key not in merged:
                raise ConfigError(f"{path}: run {i + 1} lacks {key!r}")
        _metric_value({}, merged["metric"], check_only=True)
        rows.append(merged)
    conf["rows"] = rows
    return conf


def _metric_value(result: dict[str, Any], metric: str, check_only: bool = False) -> float | None:
    """``metric`` of one run; ``A5`` is the average accuracy over tasks 1..5 after task 5 (DGM's A_t);
    ``T3`` the final accuracy on task 3 (per-task tables); ``storage.KEY`` an entry of the run's storage;
    ``selection.KEY`` a reading of the last task in ``report.selection`` (DGM's probes: ``A_last``,
    ``A_released_selected``, ...)."""
    m = re.fullmatch(r"A(\d+)", metric)
    per_task = re.fullmatch(r"T(\d+)", metric)
    stored = re.fullmatch(r"storage\.(\w+)", metric)
    reading = re.fullmatch(r"selection\.(\w+)", metric)
    if not (m or per_task or stored or reading) and metric not in PERCENT_METRICS | OTHER_METRICS:
        valid = ", ".join(sorted(PERCENT_METRICS | OTHER_METRICS))
        raise ConfigError(f"unknown metric {metric!r}; valid: A<t>, T<t>, storage.<key>, selection.<key>, {valid}")
    if check_only:
        return None
    if per_task:
        rows = result.get("accuracy") or []
        t = int(per_task.group(1))
        return rows[-1][t - 1] if rows and len(rows[-1]) >= t else None
    if stored:
        value = (result.get("storage") or {}).get(stored.group(1))
        return float(value) if isinstance(value, (int, float)) else None
    if reading:
        readings = (result.get("report") or {}).get("selection") or []
        value = readings[-1].get(reading.group(1)) if readings else None
        return float(value) if isinstance(value, (int, float)) else None
    if m:
        t = int(m.group(1))
        rows = result.get("accuracy") or []
        return sum(rows[t - 1][:t]) / t if len(rows) >= t else None
    return result.get(metric)


def is_percent(metric: str) -> bool:
    return metric in PERCENT_METRICS or bool(re.fullmatch(r"[AT]\d+|selection\.A_\w+", metric))


def command(row: dict[str, Any], seed: int, out: Path, amp: str = "none") -> str:
    parts = ["forgetless", "run", "--method", row["method"], "--benchmark", row["benchmark"], "--scenario",
             row["scenario"], "--seed", str(seed)]
    for flag, values in (("--set", row["set"]), ("--bench", row["bench"])):
        for k, v in values.items():
            v = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            parts += [flag, f"{k}={v}"]
    parts += ["--amp", amp] if amp != "none" else []
    parts += ["--out", str(out)]
    return shlex.join(parts)


def check_row(row: dict[str, Any], seeds: list[int], amp: str = "none") -> None:
    """Refuse a row whose method, benchmark, scenario, keys, values or seeds are invalid
    (:func:`runner.check_options`, no data loaded), so neither --dry-run nor a long reproduction prints or
    starts runs that would fail later."""
    from .runner import check_options, check_seed

    try:
        check_options(row["method"], row["benchmark"], row["scenario"], row["set"], row["bench"], amp)
        for seed in seeds:
            check_seed(seed)
    except ConfigError as err:
        raise ConfigError(f"row {row['label']!r}: {err}") from None


def _select_rows(rows: list[dict[str, Any]], only: str | None) -> list[dict[str, Any]]:
    """Rows whose label contains ``only`` (case-insensitive); a label given exactly selects that row alone,
    since labels such as "S-CL1 HNET" are prefixes of others ("S-CL1 HNET+R")."""
    if only is None:
        return rows
    exact = [r for r in rows if r["label"].lower() == only.lower()]
    return exact or [r for r in rows if only.lower() in r["label"].lower()]


def reproduce(name: str, out: str | Path | None = None, seeds: list[int] | None = None, only: str | None = None,
              overrides: dict[str, Any] | None = None, bench_overrides: dict[str, Any] | None = None,
              dry_run: bool = False, workers: int = 1, collect: bool = False, sweep: dict[str, Any] | None = None,
              **run_kwargs: Any) -> dict[str, Any]:
    """Run the config's rows (finished runs are reused, partial ones resumed) and tabulate ours beside the
    paper's. ``collect``: train nothing, tabulate the runs already finished under ``out`` (e.g. while the
    rest of the table is still running elsewhere); the seeds column then counts the finished runs.
    ``sweep``: options of :func:`sweep.run_many`; failed runs are marked in the table and reproduce.json,
    then :class:`sweep.RunsFailedError` is raised."""
    path = find_config(name)
    conf = load_config(path)
    out = Path(out) if out is not None else Path("runs") / "reproduce" / path.stem
    rows = _select_rows(conf["rows"], only)
    if not rows:
        raise ConfigError(f"--only {only!r} matches no row; rows: {', '.join(r['label'] for r in conf['rows'])}")
    jobs, owners, labels = [], [], []
    amp = run_kwargs.get("amp", "none")
    for row in rows:
        row["set"] = {**row["set"], **(overrides or {})}
        row["bench"] = {**row["bench"], **(bench_overrides or {})}
        row_seeds = seeds if seeds is not None else row["seeds"]
        check_row(row, row_seeds, amp)  # every row before the first command is printed or run
        row["commands"] = []
        for s in row_seeds:
            run_out = out / _slug(row["label"]) / f"seed-{s}"
            row["commands"].append(command(row, s, run_out, amp))
            jobs.append(dict(method=row["method"], benchmark=row["benchmark"], scenario=row["scenario"], seed=s,
                             config=row["set"], bench_options=row["bench"], out=run_out, **run_kwargs))
            owners.append(row)
            labels.append(f"{row['label']} seed {s}")
    runtime = expected_runtime(conf, len({str(j["out"]) for j in jobs}))  # rows of one label share their runs
    if dry_run:
        print(f"# {runtime}")  # a comment: the output stays a runnable script
        print("\n".join(dict.fromkeys(c for row in rows for c in row["commands"])))  # each run once
        return {"rows": rows, "runtime": runtime}
    if not run_kwargs.get("quiet"):
        print(runtime, file=sys.stderr)
    results = ([finished_run(j["out"]) for j in jobs] if collect
               else run_many(jobs, workers, labels=labels, **(sweep or {})))
    failures = []
    for row in rows:
        mine = [r for r, o in zip(results, owners, strict=True) if o is row and r is not None]
        row["results"] = [r for r in mine if not is_failure(r) and not r.get("diverged")]
        row["diverged"] = sum(1 for r in mine if not is_failure(r) and r.get("diverged"))  # shown, not averaged
        if failed := [r for r in mine if is_failure(r)]:  # the key is absent when every run finished
            row["failed"] = [{k: f[k] for k in ("seed", "out", "error")} for f in failed]
            failures += failed
        values = [_metric_value(r, row["metric"]) for r in row["results"]]
        row["ours"] = mean_std([v for v in values if v is not None])
        row["ours_values"] = values
    table = table_markdown(conf, rows)
    fileio.write_text(out / "reproduce.md", table)
    fileio.write_json(out / "reproduce.json", {
        "config": str(path), "title": conf.get("title"), "rows": [
            {k: v for k, v in r.items() if k != "results"} for r in rows]})
    print(table)
    if failures:
        raise RunsFailedError(failures, len(jobs))
    return {"rows": rows, "table": table}


def expected_runtime(conf: dict[str, Any], n_runs: int) -> str:
    """The config's ``runtime`` line (what was measured, or why nothing was), with the number of runs asked."""
    what = conf.get("runtime") or "not recorded for this config"
    return f"expected runtime ({n_runs} run{'s' if n_runs != 1 else ''} selected): {what}"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-").lower()


def _paper(value: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if isinstance(value, dict):
        return value.get("mean"), value.get("std")
    return float(value), None


def table_markdown(conf: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"### {conf.get('title', 'reproduction')}", ""]
    if conf.get("source"):
        lines += [f"Source: {conf['source']}", ""]
    lines += ["| row | metric | paper | ours (mean ± std) | ours − paper | seeds | command (first seed) |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        scale = 100.0 if is_percent(row["metric"]) else 1.0
        pm, ps = _paper(row.get("paper"))
        paper = "–" if pm is None else (f"{pm:.2f}" + (f" ± {ps:.2f}" if ps is not None else ""))
        m, s = row["ours"]
        spread = f" ± {s * scale:.2f}" if len(row["results"]) > 1 else ""
        n_failed = len(row.get("failed", []))
        ours = (("failed" if n_failed else "diverged" if row.get("diverged") else "n/a") if math.isnan(m)
                else f"{m * scale:.2f}{spread}")
        if row.get("diverged") and not math.isnan(m):
            ours += f" ({row['diverged']} diverged)"
        diff = "–" if pm is None or math.isnan(m) else f"{m * scale - pm:+.2f}"
        n_seeds = f"{len(row['results'])} ({n_failed} failed)" if n_failed else str(len(row["results"]))
        lines.append(f"| {row['label']} | {row['metric']} | {paper} | {ours} | {diff} | {n_seeds} | "
                     f"`{row['commands'][0]}` |")
    return "\n".join(lines) + "\n"
