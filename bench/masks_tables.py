"""Table-1-like view of a domain-chain reproduction (``forgetless reproduce masks-domain-chain``):
rows are the tasks, columns the methods (mean ± std of the final accuracy over seeds), then the mean over the
new tasks, the decathlon score S of those tasks (Eq. 4, baseline errors: the ``individual`` column) and
"# Params". Not a benchmark (``run_bench.py`` only runs ``bench_*.py``).

    python bench/masks_tables.py OUT_DIR [--baseline individual] [--columns a,b,c]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from forgetless.metrics import decathlon_score


def _load(out: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(out.glob("*/seed-*/results.json")):
        result = json.loads(path.read_text())
        if result.get("complete"):
            runs.setdefault(path.parent.parent.name, []).append(result)
    return runs


def _fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "n/a"
    m = statistics.fmean(values) * scale
    s = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(out: Path, baseline: str = "individual", columns: list[str] | None = None) -> str:
    runs = _load(out)
    if not runs:
        raise SystemExit(f"no finished runs under {out}")
    columns = [c for c in (columns or list(runs)) if c in runs]
    first = runs[columns[0]][0]
    names = [t["name"] or f"task {t['id'] + 1}" for t in first["tasks"]]
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    lines = [f"| task | {' | '.join(columns)} |", "|---|" + "---|" * len(columns)]
    for j, name in enumerate(names):
        cells = [_fmt([r["accuracy"][-1][j] for r in runs[c]]) for c in columns]
        lines.append(f"| {j + 1}. {name} | {' | '.join(cells)} |")
    mean_new = [_fmt([statistics.fmean(r["accuracy"][-1][1:]) for r in runs[c]]) for c in columns]
    lines.append(f"| mean of the new tasks | {' | '.join(mean_new)} |")
    if baseline in runs:
        by_seed = {r["seed"]: r for r in runs[baseline]}
        scores = []
        for c in columns:
            values = []
            for r in runs[c]:
                ref = by_seed.get(r["seed"])
                if ref is None:
                    continue
                errors = {n: 1 - a for n, a in zip(names[1:], r["accuracy"][-1][1:], strict=True)}
                base = {n: 1 - a for n, a in zip(names[1:], ref["accuracy"][-1][1:], strict=True)}
                values.append(decathlon_score(errors, base))
            scores.append(_fmt(values, scale=1.0, digits=0))
        lines.append(f"| decathlon score S (new tasks, E_max = 2 x {baseline}'s error) | {' | '.join(scores)} |")
    params = [_fmt([r["storage"]["params_ratio"] for r in runs[c]], scale=1.0, digits=4) for c in columns]
    lines.append(f"| # Params | {' | '.join(params)} |")
    return f"seeds {', '.join(map(str, seeds))}; {out}\n\n" + "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--baseline", default="individual")
    p.add_argument("--columns", help="comma-separated run directories, in order")
    args = p.parse_args()
    print(table(args.out, args.baseline, args.columns.split(",") if args.columns else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
