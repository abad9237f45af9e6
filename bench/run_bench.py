"""`make bench`: run every bench/bench_*.py module and print a markdown table (a benchmark, not a test).

    python bench/run_bench.py [--only NAME] [--quick] [--data-dir DIR] [--device cpu|cuda] [--json FILE]

Each module defines ``bench(args) -> list[dict]`` with at least ``method``, ``seconds_per_task`` and, where
it makes sense, ``ratio_to_finetune``. Paste the table into BENCHMARKS.md with the machine line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="run only modules whose name contains this text")
    p.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    default_data = os.environ.get("FORGETLESS_DATA") or str(HERE.parent.parent / "shared" / "data")
    p.add_argument("--data-dir", default=default_data)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=HERE.parent / "runs" / "bench.json")
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    all_rows = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if args.only and args.only not in name:
            continue
        rows = importlib.import_module(path.stem).bench(args)
        for r in rows:
            r.setdefault("suite", name)
        all_rows += rows
        print(table(name, rows), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "rows": all_rows}, indent=2))
    return 0


def table(name: str, rows: list[dict]) -> str:
    keys = [k for k in ("method", "backbone", "benchmark", "seconds_per_task", "samples_per_second",
                        "ratio_to_finetune", "seconds_per_step", "ratio", "note") if any(k in r for r in rows)]
    out = [f"### {name}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
