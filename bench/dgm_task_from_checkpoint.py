"""Re-run one task of a finished DGM run from its checkpoint with changed classifier options, and read the
result on the whole test split (per class, confusion, share sent to the newest class) and on the probes'
subsets (first 300 test images per class and the rest).

The generator and the critic do not depend on the classifier options (``classifier_ema``, ``pseudo_*``,
``consolidation_*``), so one 10-task run with ``--keep-checkpoints`` lets task K be re-run under each of
them for the cost of one task, with the same numbers a whole run would give (``forgetless.rerun``).

    python bench/dgm_task_from_checkpoint.py runs/dgm24/dgmw-s0 --task 10 --set consolidation_steps=100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from forgetless import config
from forgetless.rerun import rerun_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory written with --keep-checkpoints")
    ap.add_argument("--task", type=int, required=True, help="the task to re-run (1-based; needs task-(K-1).pt)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method option to change")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the readings here")
    args = ap.parse_args()

    model, bench, cpu = rerun_task(args.run, args.task, config.parse_kv(args.set, "--set"), args.data_dir)
    i, info = args.task - 1, bench.info()
    n = info.n_outputs
    confusion = torch.zeros(n, n, dtype=torch.long)
    first, rest = torch.zeros(n), torch.zeros(n)
    allowed = torch.as_tensor(info.active_labels(i))
    for task in bench.tasks[: i + 1]:
        y = task.test.y
        out = model.predict(task.test.inputs())
        pred = allowed[out[:, allowed].argmax(1)]
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
        for c in y.unique().tolist():
            ok = (pred[y == c] == c).float()
            first[c], rest[c] = ok[:300].mean(), ok[300:].mean()
    seen = confusion[: i + 1, : i + 1]
    per_class = seen.diag() / seen.sum(1).clamp(min=1)
    newest = [int(c) for c in bench.tasks[i].labels]
    older = [c for c in range(i + 1) if c not in newest]
    to_newest = float(seen[older][:, newest].sum() / seen[older].sum()) if older else 0.0
    reading = {"task": args.task, "sets": args.set, "A_t": float(per_class.mean()),
               "per_class": [round(float(v), 4) for v in per_class], "older_to_newest": round(to_newest, 4),
               "first300": float(first[: i + 1].mean()), "after300": float(rest[: i + 1].mean()),
               "selection": {k: v for k, v in (model.selection[-1] if model.selection else {}).items() if k != "curve"},
               "train_cpu_s": round(cpu, 1), "confusion": seen.tolist()}
    print(json.dumps({k: v for k, v in reading.items() if k != "confusion"}))
    print("confusion (row = true class, column = predicted):")
    for r, row in enumerate(reading["confusion"]):
        print(f"{r:2d} " + " ".join(f"{v:5d}" for v in row))
    if args.json:
        args.json.write_text(json.dumps(reading, indent=1))


if __name__ == "__main__":
    main()
