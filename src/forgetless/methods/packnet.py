"""PackNet (Mallya & Lazebnik, CVPR 2018): iterative magnitude pruning packs the tasks into one network.

Every Linear/Conv2d weight has an owner (``packnet_owner``: 0 = free, k = task k, 1-based). Task t
trains the free weights (which start at zero once pruned), the weights of earlier tasks frozen but used;
then a fraction of the weights it owns, the smallest in magnitude per layer, is released (set to zero,
owner 0) and the task is retrained briefly on what it keeps. At test time task t sees the weights owned
by tasks 1..t (``W o M_t`` through :class:`~forgetless.nn.masks.layers.MaskedLinear`), so its predictions
never change again. Biases and batch norm are trained with the first task only, then frozen (the code's
``nobias-nobn`` setting for the added tasks).

Defaults follow the released code (``arunmallya/packnet``, ``src/scripts``): SGD with momentum 0.9, lr 1e-3
for 20 epochs divided by 10 after 10, batch 32; prune 50% of the first (pretrained, ImageNet) network's
weights and 75% of each added task's (``run_imagenet_pruning.sh`` 0.5; ``run_all_sequence.sh``
``0.75,0.75,-1``: the last task is not pruned); retrain 10 epochs at lr 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..benchmarks.base import Task
from ..config import option
from ..errors import ConfigError
from ..nn.masks import PIGGYBACK, MaskedWeight, mask_layers, masked_layers
from ..nn.taskwise import task_norms
from ..training import Batch, Context
from .base import register
from .pretrained import TransferConfig, TransferMethod, n_bits, parameter_ratio


@dataclass
class PackNetConfig(TransferConfig):
    epochs: int = 20
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-3
    # fraction of its weights a task releases: task 1, then every later task
    prune: tuple[float, ...] = option((0.5, 0.75), ge=0, lt=1)
    prune_last: bool = False  # the code does not prune the last task (nothing follows it)
    retrain_epochs: int = option(10, ge=0)
    retrain_iterations: int | None = None  # a step budget instead of retrain_epochs
    retrain_lr: float = option(1e-4, gt=0)
    retrain_decay_at: tuple[float, ...] = ()

    def validate(self) -> None:
        super().validate()
        if not self.prune:
            raise ConfigError("prune needs at least one ratio (task 1, then every later task)")


@register("packnet", "iterative magnitude pruning with a per-weight owner mask (Mallya & Lazebnik)")
class PackNet(TransferMethod):
    Config = PackNetConfig

    def prune_ratio(self, task_id: int) -> float:
        if task_id == self.info.n_tasks - 1 and not self.config.prune_last:
            return 0.0
        ratios = self.config.prune
        return ratios[min(task_id, len(ratios) - 1)]

    # ------------------------------------------------------------------------------------------- masks
    def layers(self) -> list[MaskedWeight]:
        return masked_layers(self.backbone)

    def claim_free_weights(self, task_id: int) -> None:
        """Free weights (owner 0) go to ``task_id``; its view is every weight of tasks <= ``task_id``."""
        for layer in self.layers():
            owner = layer.packnet_owner
            owner[owner == 0] = task_id + 1
            mask = (owner > 0) & (owner <= task_id + 1)
            if layer.has_task(task_id):
                layer.set_mask(task_id, mask)
            else:
                layer.add_task(task_id, PIGGYBACK, mask=mask)

    @torch.no_grad()
    def prune(self, task_id: int, ratio: float) -> None:
        """Release the ``ratio`` smallest-magnitude weights owned by ``task_id`` in every layer."""
        for layer in self.layers():
            owner, w = layer.packnet_owner, layer.weight
            mine = owner == task_id + 1
            values = w[mine].abs()
            k = round(ratio * values.numel())
            if k > 0:
                cutoff = values.kthvalue(k).values
                release = mine & (w.abs() <= cutoff)
                owner[release] = 0
                w[release] = 0.0
            layer.set_mask(task_id, (owner > 0) & (owner <= task_id + 1))

    def mask_gradients(self, task_id: int):
        """Gradient surgery: only the weights ``task_id`` owns move (weight decay applied to them by hand,
        so the optimiser's own decay cannot touch frozen weights)."""
        wd = self.config.weight_decay

        def before_step(batch: Batch) -> None:
            with torch.no_grad():
                for layer in self.layers():
                    g = layer.weight.grad
                    if g is None:
                        continue
                    if wd:
                        g.add_(layer.weight, alpha=wd)
                    g.mul_(layer.packnet_owner == task_id + 1)

        return before_step

    # ---------------------------------------------------------------------------------------- training
    def after_pretrain(self, task: Task, ctx: Context) -> None:
        for layer in mask_layers(self.backbone):
            layer.register_buffer("packnet_owner", torch.ones_like(layer.weight, dtype=torch.uint8))
        self.claim_free_weights(0)
        ratio = self.prune_ratio(0)
        if ratio > 0:
            self.prune(0, ratio)
            self.retrain(task, ctx, first=True)

    def learn_task(self, task: Task, ctx: Context) -> None:
        t = task.id
        self.freeze_shared()
        self.claim_free_weights(t)
        net = self.select(t)
        weights = [layer.weight for layer in self.layers()]
        self.train_task(task, ctx, net, weights, train_norm=False, weight_decay=0.0,
                        before_step=self.mask_gradients(t))
        ratio = self.prune_ratio(t)
        if ratio > 0:
            self.prune(t, ratio)
            self.retrain(task, ctx, first=False)

    def freeze_shared(self) -> None:
        """After the first task biases and batch norm are shared and fixed."""
        for layer in self.layers():
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
        for norm in task_norms(self.backbone):
            norm.requires_grad_(False)

    def retrain(self, task: Task, ctx: Context, first: bool) -> None:
        cfg, t = self.config, task.id
        if cfg.retrain_epochs == 0 and not cfg.retrain_iterations:
            return
        net = self.select(t)
        params = [layer.weight for layer in self.layers()]
        if first:  # the first network also retrains its biases and batch norm
            params += [layer.bias for layer in self.layers() if layer.bias is not None]
            params += [p for norm in task_norms(self.backbone) for p in norm.norms[0].parameters()]
        # Weight decay of the weights goes through the gradient surgery (only on what the task owns).
        self.train_task(task, ctx, net, params, train_norm=first, lr=cfg.retrain_lr, epochs=cfg.retrain_epochs,
                        iterations=cfg.retrain_iterations, decay_at=cfg.retrain_decay_at, weight_decay=0.0,
                        before_step=self.mask_gradients(t), desc="retrain")

    # ----------------------------------------------------------------------------------------- storage
    def task_storage(self) -> tuple[list[int], list[int]]:
        layers = self.layers()
        if not layers:
            return [], []
        entries = sum(layer.weight.numel() for layer in layers)
        return [entries * n_bits(self.info.n_tasks + 1)], [0]

    def storage(self) -> dict[str, Any]:
        out = super().storage()
        bits, reals = self.task_storage()
        out["params_ratio"] = parameter_ratio(self.baseline_params, bits, reals)
        out["owner_bits_per_weight"] = n_bits(self.info.n_tasks + 1)
        return out

    def report(self) -> dict[str, Any]:
        """Per layer: fraction of the weights owned by each task and still free."""
        out: dict[str, Any] = {}
        for name, layer in self.backbone.named_modules():
            if isinstance(layer, MaskedWeight) and hasattr(layer, "packnet_owner"):
                owner = layer.packnet_owner
                out[name] = {"free": round(float((owner == 0).float().mean()), 6),
                             **{f"task {k}": round(float((owner == k).float().mean()), 6)
                                for k in range(1, self.tasks_learned + 1)}}
        return {"owners": out}
