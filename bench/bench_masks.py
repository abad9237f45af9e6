"""Time per task of the binary-mask family (issue 4) against plain fine-tuning on the same benchmark and
step budget: hat and packnet on Split MNIST (task-IL), the transfer methods on domain-chain (after the
shared pretraining, which is excluded: the first task's time is not counted). Also one Piggyback step on a
torchvision-layout resnet18 at 64x64 against a plain fine-tuning step of the same network (same process)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from forgetless.nn import backbones
from forgetless.nn.masks import init_scores, mask_layers
from forgetless.nn.masks.binarize import PIGGYBACK_INIT, PIGGYBACK_THRESHOLD
from forgetless.nn.norm_statistics import freeze_norm_statistics
from forgetless.nn.taskwise import select_task

from common import time_run, timed


def _optimizer(params, kind: str, lr: float) -> torch.optim.Optimizer:
    """Fused Adam / SGD with momentum, as the transfer methods build them (not imported: methods/ moves)."""
    params = list(params)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)


def resnet18_step_ratio(batch: int = 32, side: int = 64, repeat: int = 10) -> dict:
    """Median seconds of one training step: Piggyback (masked convolutions, frozen weights and batch norm,
    Adam on the scores + SGD head, as the method trains a new task) / fine-tuning (Adam on every weight)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, side, side, generator=g), torch.randint(0, 10, (batch,), generator=g)
    plain = backbones.create("resnet18", (3, side, side), stem="imagenet")
    head = torch.nn.Linear(plain.out_features, 10)
    masked, masked_head = copy.deepcopy(plain), copy.deepcopy(head)
    plain_opt = _optimizer([*plain.parameters(), *head.parameters()], "adam", 1e-4)

    def plain_step() -> None:
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(plain(x)), y).backward()
        plain_opt.step()

    layers = mask_layers(masked, PIGGYBACK_THRESHOLD)
    scores = []
    for layer in layers:
        layer.weight.requires_grad_(False)
        scores.append(layer.add_task(1, scores=init_scores(layer.weight.shape, "constant", PIGGYBACK_INIT)).scores)
    for p in masked.parameters():
        if not any(p is s for s in scores):
            p.requires_grad_(False)
    select_task(masked, 1, norm=0)
    masked.train()
    freeze_norm_statistics(masked)
    opts = [_optimizer(scores, "adam", 1e-4), _optimizer(masked_head.parameters(), "sgd", 1e-3)]

    def piggyback_step() -> None:
        for o in opts:
            o.zero_grad(set_to_none=True)
        F.cross_entropy(masked_head(masked(x)), y).backward()
        for o in opts:
            o.step()

    plain.train()
    t_plain = timed(plain_step, repeat=repeat)
    t_pig = timed(piggyback_step, repeat=repeat)
    return {"method": "piggyback step vs finetune step", "backbone": "resnet18 (torchvision layout)",
            "seconds_per_step": t_pig, "ratio": t_pig / t_plain,
            "note": f"{side}x{side}, batch {batch}; fine-tuning step {t_plain * 1e3:.0f} ms, median of {repeat}"}


def bench(args) -> list[dict]:
    it = 60 if args.quick else 300
    base = {"backbone": "mlp", "iterations": it, "batch_size": 32}
    pre = {"pretrain_iterations": it}
    runs = [
        ("split-mnist", "finetune", {}),
        ("split-mnist", "hat", {}),
        ("split-mnist", "packnet", {**pre, "retrain_iterations": it // 2}),
        ("domain-chain", "finetune", {}),
        ("domain-chain", "classifier-only", pre),
        ("domain-chain", "individual", pre),
        ("domain-chain", "piggyback", pre),
        ("domain-chain", "affine-simple", pre),
        ("domain-chain", "affine-full", pre),
    ]
    rows, reference = [], {}
    for benchmark, method, extra in runs:
        row = time_run(method, benchmark, "task", {**base, **extra}, data_root=args.data_dir, device=args.device)
        if method == "finetune":
            reference[benchmark] = row["seconds_per_task"]
        row["ratio_to_finetune"] = row["seconds_per_task"] / reference[benchmark]
        note = f"{it} iterations of batch 32 per task"
        if method == "packnet":
            note += f" + {it // 2} retraining iterations"
        row["note"] = note
        rows.append(row)
    rows.append(resnet18_step_ratio(repeat=5 if args.quick else 10))
    return rows
