"""Final accuracy of every method under float32 and under --amp bf16 (CPU autocast), split digits, seed 0,
the methods' defaults; methods that refuse bf16 are skipped. README "Scaling out" quotes its output.

    python bench/amp_compare.py [METHOD,...] [SCENARIO]
"""

from __future__ import annotations

import json
import sys
import time

import torch

from forgetless import precision, runner
from forgetless.methods import base as mbase


def main() -> None:
    torch.set_num_threads(1)
    names = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else [
        m for m in mbase.METHODS if m not in precision.REFUSED]
    scenario = sys.argv[2] if len(sys.argv) > 2 else "task"
    for name in names:
        cls = mbase.METHODS[name].cls
        scen = scenario if scenario in cls.scenarios else cls.scenarios[0]
        row = {}
        for amp in ("none", "bf16"):
            start = time.perf_counter()
            r = runner.run(name, "split-digits", scenario=scen, seed=0, quiet=True, amp=amp, device="cpu")
            seconds = round(time.perf_counter() - start, 1)
            row[amp] = {"final_accuracy": round(r["final_accuracy"], 4), "seconds": seconds}
        print(name, scen, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
