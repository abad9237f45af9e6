"""Piggyback and the affine weight transformations with binary masks (Mancini et al., ECCV-W 2018).

For every new task each Linear/Conv2d weight W of the frozen pretrained backbone is replaced by
``W~ = k0 W + k1 1 + k2 M + k3 W o M`` with a learned binary mask M (straight-through, real-valued scores)
and scalar k's per layer and task (:mod:`forgetless.nn.masks.layers`):

- ``piggyback`` (Mallya et al. 2018): k = (0, 0, 0, 1), i.e. ``W o M``; Piggyback's code defaults (scores
  start at 1e-2, threshold 5e-3) and shared, frozen batch norm (``task_bn=true`` gives "Piggyback with BN").
- ``affine-simple`` (Eq. 3): k0, k1, k2 learned, k3 = 0; ``affine-full`` (Eq. 2): all four learned.
  Task-specific batch norm; k0 fixed to 1 for layers followed by (task-specific) batch norm; scores start
  uniform in [1e-4, 2e-4] with h(r) = 1[r >= 0] (threshold 0).

Every Table 5 variant is a configuration: ``learn_k`` (which k's are learned), ``k_init``, ``surrogate=sigmoid``
("with Sigmoid"), ``channel_wise=true``, ``task_bn``. Biases stay the pretrained ones (as in Piggyback).
Once a task is learned its mask is stored as booleans and its k's as constants, so its predictions never
change (tested bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..benchmarks.base import Task
from ..errors import ConfigError
from ..nn.masks import WeightTransform, freeze_tasks, init_scores, mask_layers, mask_summary, masked_layers
from ..nn.masks.binarize import PIGGYBACK_INIT, PIGGYBACK_THRESHOLD
from ..nn.taskwise import task_norms
from ..training import Context
from .base import register
from .pretrained import TransferConfig, TransferMethod, norm_reals_per_task


@dataclass
class WeightMaskConfig(TransferConfig):
    """Defaults of ``affine-simple`` (Mancini et al. 2018, Sec. 3-4)."""

    threshold: float = 0.0  # h(r) = 1[r >= 0] (Sec. 3.2)
    mask_init: Literal["constant", "uniform"] = "uniform"  # Sec. 4: uniform in [1e-4, 2e-4]
    mask_scale: float = PIGGYBACK_INIT  # the value of a constant init
    mask_low: float = 1e-4
    mask_high: float = 2e-4
    surrogate: Literal["identity", "sigmoid"] = "identity"
    learn_k: tuple[bool, ...] = (True, True, True, False)  # k0, k1, k2, k3
    k_init: tuple[float, ...] = (1.0, -1.0, 1.0, 0.0)
    k_relative: bool = True  # k1, k2 initialised in units of the layer's mean |W| (W~ = W at the start)
    channel_wise: bool = False  # one k per output channel (Table 5, last row)
    task_bn: bool = True  # task-specific batch norm (scale, bias, running statistics)

    def validate(self) -> None:
        super().validate()
        if len(self.learn_k) != 4 or len(self.k_init) != 4:
            raise ConfigError("learn_k and k_init need four entries (k0, k1, k2, k3)")
        if self.mask_init == "constant" and not self.mask_scale > self.threshold:
            raise ConfigError(f"mask_scale ({self.mask_scale}) must exceed threshold ({self.threshold}) so the "
                              f"mask starts all ones")
        if self.mask_init == "uniform" and not self.mask_low > self.threshold:
            raise ConfigError(f"mask_low ({self.mask_low}) must exceed threshold ({self.threshold}) so the "
                              f"mask starts all ones")


@dataclass
class PiggybackConfig(WeightMaskConfig):
    """Piggyback's code (arunmallya/piggyback): scores 1e-2, threshold 5e-3, W o M, shared batch norm."""

    threshold: float = PIGGYBACK_THRESHOLD
    mask_init: Literal["constant", "uniform"] = "constant"
    learn_k: tuple[bool, ...] = (False, False, False, False)
    k_init: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0)
    k_relative: bool = False
    task_bn: bool = False


@dataclass
class AffineFullConfig(WeightMaskConfig):
    learn_k: tuple[bool, ...] = (True, True, True, True)


class WeightMaskTransfer(TransferMethod):
    """Frozen pretrained backbone, a learned binary mask and k's per layer and task (see the module docstring)."""

    Config = WeightMaskConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.k_counts: dict[int, int] = {}

    def transform(self) -> WeightTransform:
        cfg = self.config
        learn = list(cfg.learn_k)
        # k0 is fixed before batch norm: a task-specific BN re-normalises, so the weight's scale is free.
        if self.uses_task_norm() and any(True for _ in task_norms(self.backbone)):
            learn[0] = False
        return WeightTransform(init=tuple(float(k) for k in cfg.k_init), learn=tuple(bool(v) for v in learn),
                               relative=cfg.k_relative, channel_wise=cfg.channel_wise)

    def learn_task(self, task: Task, ctx: Context) -> None:
        cfg, t = self.config, task.id
        layers = mask_layers(self.backbone, cfg.threshold, cfg.surrogate)
        for layer in layers:  # the shared weights never change again
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
        transform = self.transform()
        params, k_count = [], 0
        for layer in layers:
            scores = init_scores(layer.weight.shape, cfg.mask_init, cfg.mask_scale, cfg.mask_low, cfg.mask_high,
                                 generator=ctx.generator, device=layer.weight.device)
            state = layer.add_task(t, transform, scores=scores)
            params.append(state.scores)
            if state.k.requires_grad:
                params.append(state.k)
                k_count += state.n_learned_k()
        self.k_counts[t] = k_count
        if self.uses_task_norm():
            params += self.start_task_norm(t)
        net = self.select(t)
        self.train_task(task, ctx, net, params, train_norm=self.uses_task_norm())
        freeze_tasks(self.backbone, t)

    def task_storage(self) -> tuple[list[int], list[int]]:
        layers = masked_layers(self.backbone)
        bits, reals = [], []
        for t in range(1, self.tasks_learned):
            bits.append(sum(layer.mask_entries() for layer in layers if layer.has_task(t)))
            reals.append(self.k_counts.get(t, 0) + (norm_reals_per_task(self.backbone) if self.uses_task_norm() else 0))
        return bits, reals

    def report(self) -> dict[str, Any]:
        """Per task and masked layer: the fraction of ones in the mask and the k's (Fig. 4)."""
        return {"masks": {str(t): mask_summary(self.backbone, t) for t in range(1, self.tasks_learned)}}


@register("piggyback", "binary mask per layer and task on a frozen pretrained network (W o M)")
class Piggyback(WeightMaskTransfer):
    Config = PiggybackConfig


@register("affine-simple", "affine weight transformation k0 W + k1 + k2 M with a binary mask (Mancini et al.)")
class AffineSimple(WeightMaskTransfer):
    Config = WeightMaskConfig


@register("affine-full", "affine weight transformation k0 W + k1 + k2 M + k3 W o M (Mancini et al.)")
class AffineFull(WeightMaskTransfer):
    Config = AffineFullConfig
