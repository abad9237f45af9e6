"""Fine-tuning throughput of the mlp and simple-cnn backbones on Split MNIST (the reference every
method's time per task is divided by)."""

from __future__ import annotations

from common import time_run


def bench(args) -> list[dict]:
    it = 100 if args.quick else 500
    rows = []
    for backbone in ("mlp", "simple-cnn"):
        cfg = {"backbone": backbone, "iterations": it if backbone == "mlp" else it // 5, "batch_size": 128}
        row = time_run("finetune", "split-mnist", "class", cfg, data_root=args.data_dir, device=args.device)
        row["note"] = f"{cfg['iterations']} iterations of batch 128 per task"
        rows.append(row)
    return rows
