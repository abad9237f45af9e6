"""HAT: Hard Attention to the Task (Serra et al., ICML 2018), task-incremental.

Every hidden unit of the backbone (each Linear/Conv2d output feature or channel) is multiplied by a
task-specific mask ``sigmoid(s e_t)`` (:mod:`forgetless.nn.masks.sigmoid`). Within each epoch ``s`` is
annealed from ``1/s_max`` to ``s_max``; the embeddings' gradients are compensated for it and the embeddings
clamped to [-6, 6]; a regularizer pushes the masks of still-free units towards zero. After a task its
mask at ``s_max`` is cumulated (elementwise max) and the gradients of later tasks are multiplied by
``1 - min(post, pre)`` of the cumulated masks, so what earlier tasks use no longer changes.

Defaults follow the authors' code (``joansj/hat``: ``src/approaches/hat.py`` and ``src/run.py``): plain SGD
with lr 0.05, batch 64, up to 200 epochs with the validation schedule (lr divided by 3 after 5 epochs
without a better validation loss, training stops below lr 1e-4, the best model is restored), gradient
norm clipped at 10000, s_max 400, lambda 0.75, embeddings N(0, 1).

Backbones: mlp, simple-cnn, zenke-cnn, or a user's network of Linear/Conv2d layers with any ``forward``
(skip connections included). Our reading for a network that is not a chain (the paper's networks are):

- every Linear/Conv2d's output units (features, channels) are masked, wherever they go: a unit a task does not
  use is zero on the residual path too (the unit mask is of the layer, as in the paper);
- the weight mask ``min(post, pre)`` of gradient blocking needs each layer's input units; they are found from
  the data flow (:func:`forgetless.nn.surgery.layer_sources`, one traced forward pass). An input that is the sum
  of several masked outputs (``h + conv2(h)``) takes the elementwise max of their cumulated masks: a channel is
  protected as soon as any term of it serves an old task. An input that also depends on something unmasked
  (the raw image through a skip, a parameter the network adds) has no pre mask: every weight into a used
  output unit is blocked, which is safe.

Refused, with the layer named: a layer called more than once per forward pass (one mask per call would be
needed), an input built from masked layers of different widths (a concatenation: its channels are not the
channels of one source), and normalisation layers (a unit masked off before a batch norm comes out as the
norm's bias, not zero, and shared running statistics would drift; HAT's networks have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import Task
from ..config import option
from ..distributed import all_reduce_gradients
from ..errors import ConfigError, ForgetlessError
from ..nn.backbones import feature_width
from ..nn.heads import MultiHead
from ..nn.masks import (
    HAT_CLAMP,
    HAT_COSH_CLAMP,
    HAT_LAMBDA,
    HAT_SMAX,
    UnitMasked,
    anneal,
    block_gradients_,
    cumulative_max,
    set_scale,
    sparsity_regularizer,
    unit_gradient_factors,
    wrap_units,
)
from ..nn.surgery import layer_sources, qualified_names
from ..nn.taskwise import select_task
from ..training import Context, TrainConfig, config_optimizer
from ..training.selection import BestOnValidation, mean_loss
from .base import Method, register

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class HATConfig(TrainConfig):
    epochs: int = 200  # an upper bound: the validation schedule usually stops earlier
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.0  # plain SGD in the HAT code
    grad_clip: float | None = 10000.0
    smax: float = option(HAT_SMAX, gt=1)
    lamb: float = option(HAT_LAMBDA, ge=0)
    clamp: float = option(HAT_CLAMP, gt=0)
    cosh_clamp: float = HAT_COSH_CLAMP
    embedding_init: Literal["normal", "zeros"] = "normal"
    lr_patience: int = option(5, ge=0)  # epochs without a better validation loss before lr /= lr_factor (0: fixed lr)
    lr_factor: float = option(3.0, gt=1)
    lr_min: float = 1e-4


@register("hat", "hard attention to the task: annealed sigmoid unit masks per task (Serra et al.)")
class HAT(Method):
    Config: ClassVar[type] = HATConfig
    scenarios: ClassVar[tuple[str, ...]] = ("task",)

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.backbone = self.make_backbone()
        names = qualified_names(self.backbone)
        for m in self.backbone.modules():
            if isinstance(m, NORMS):
                raise ConfigError(f"hat cannot mask units before the normalisation layer {names[id(m)]!r} "
                                  f"({type(m).__name__}): a unit masked off would come out as its bias, not zero; "
                                  f"use a network without normalisation layers (valid built-in: mlp, simple-cnn, "
                                  f"zenke-cnn)")
        self.units: list[UnitMasked] = wrap_units(self.backbone, info.n_tasks, self.config.embedding_init)
        if not self.units:
            raise ConfigError("hat found no Linear/Conv2d layer to mask in the backbone")
        self.sources = self._unit_sources()
        self.heads = MultiHead(feature_width(self.backbone, info.input_shape), info.task_labels, info.n_outputs)
        self.n_cumulated = 0
        self.tasks_learned = 0

    def _unit_sources(self) -> list[list[int | None]]:
        """Which masked layers feed each masked layer (see the module docstring); refuses what HAT's
        per-unit rule cannot express."""
        example = torch.zeros(2, *self.info.input_shape)
        sources = layer_sources(self.backbone, self.units, example)
        names = qualified_names(self.backbone)
        for unit, src in zip(self.units, sources, strict=True):
            masked = [j for j in src if j is not None]
            widths = {self.units[j].n_units for j in masked}
            layer = unit.layer
            inputs = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            # a conv reads its sources' channels; a linear layer their channels flattened (or pooled)
            fits = isinstance(layer, nn.Linear) and len(widths) == 1 and inputs % next(iter(widths)) == 0
            if masked and not (fits or widths == {inputs}):
                feeds = ", ".join(f"{names[id(self.units[j])]!r} ({self.units[j].n_units} units)" for j in masked)
                raise ConfigError(f"hat: the {inputs} inputs of layer {names[id(unit)]!r} are not the units of "
                                  f"{feeds} channel by channel (a concatenation?); HAT's gradient rule needs each "
                                  f"input unit to be one unit of the layers that feed it")
        return sources

    # ---------------------------------------------------------------------------------- masks
    def cumulated(self) -> list[torch.Tensor] | None:
        if not self.n_cumulated:
            return None
        return [getattr(self, f"cumulated_{i}") for i in range(len(self.units))]

    def masks(self, task_id: int, s: float) -> list[torch.Tensor]:
        return [u.unit_mask(task_id, s) for u in self.units]

    def features(self, x: torch.Tensor, task_id: int, s: float) -> torch.Tensor:
        select_task(self.backbone, task_id)
        set_scale(self.backbone, s)
        return self.backbone(x)

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if task_id is None:
            raise ForgetlessError("hat needs the task id at test time (task-incremental only)")
        return self.heads(self.features(x, task_id, self.config.smax), task_id)

    def loss(self, x: torch.Tensor, y: torch.Tensor, task_id: int, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.heads.heads[task_id](self.features(x, task_id, s))
        ce = F.cross_entropy(logits, y - self.info.task_labels[task_id][0])
        reg = sparsity_regularizer(self.masks(task_id, s), self.cumulated())
        return ce + self.config.lamb * reg, ce

    # -------------------------------------------------------------------------------- training
    def optimizer(self, task_id: int, lr: float) -> torch.optim.Optimizer:
        params = list(self.backbone.parameters()) + list(self.heads.heads[task_id].parameters())
        return config_optimizer(params, self.config, lr, fused=True)

    def learn(self, task: Task, ctx: Context) -> None:
        cfg, t = self.config, task.id
        self.train()
        cumulated = self.cumulated()
        block = unit_gradient_factors(self.units, cumulated, self.sources) if cumulated is not None else []
        lr, patience = cfg.lr, cfg.lr_patience
        optimizer = self.optimizer(t, lr)
        best = BestOnValidation({"backbone": self.backbone, "head": self.heads.heads[t]})
        trainable = [p for p in self.parameters() if p.requires_grad]
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations):
            s = anneal(cfg.smax, batch.index, batch.per_epoch)
            loss, ce = self.loss(batch.x, batch.y, t, s)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ctx.world_size > 1:
                all_reduce_gradients(trainable, batch.share)
            block_gradients_(block)
            for u in self.units:
                u.mask.compensate_(s, cfg.smax, cfg.cosh_clamp)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            for u in self.units:
                u.mask.clamp_(cfg.clamp)
            if ctx.should_log(batch):
                ctx.log(step=batch.step, epoch=batch.epoch, loss=ce, total_loss=loss, s=s)
            if not batch.last_in_epoch or len(task.val) == 0 or cfg.lr_patience == 0:
                continue
            # HAT's validation schedule: keep the best model, divide lr when the validation loss stalls.
            val = self.validation_loss(task, t)
            self.train()
            ctx.log(epoch=batch.epoch, val_loss=val, lr=lr)
            if best.update(val):
                patience = cfg.lr_patience
                continue
            patience -= 1
            if patience <= 0:
                lr /= cfg.lr_factor
                if lr < cfg.lr_min:
                    break
                patience = cfg.lr_patience
                optimizer = self.optimizer(t, lr)
        best.restore()
        self.cumulate(t)
        self.tasks_learned += 1

    @torch.no_grad()
    def validation_loss(self, task: Task, task_id: int) -> float:
        self.eval()
        return mean_loss(task.val, lambda x, y: self.loss(x, y, task_id, self.config.smax)[0])

    @torch.no_grad()
    def cumulate(self, task_id: int) -> None:
        """Add the task's mask at s_max to the cumulated masks (elementwise max)."""
        previous = self.cumulated()
        for i, m in enumerate(self.masks(task_id, self.config.smax)):
            self.register_buffer(f"cumulated_{i}", cumulative_max(None if previous is None else previous[i], m))
        self.n_cumulated += 1

    # ---------------------------------------------------------------------------------- reporting
    def storage(self) -> dict[str, Any]:
        out = super().storage()
        units = sum(u.n_units for u in self.units)
        out["mask_units_per_task"] = units
        out["mask_bits"] = units * self.tasks_learned  # a mask at s_max is (nearly) binary: 1 bit per unit
        return out

    @torch.no_grad()
    def report(self) -> dict[str, Any]:
        """Per task and layer: fraction of units the task uses (mask > 0.5) and of non-binary mask values."""
        smax = self.config.smax
        used: dict[str, list[float]] = {}
        nonbinary = 0
        for t in range(self.tasks_learned):
            masks = self.masks(t, smax)
            used[str(t)] = [round(float((m > 0.5).float().mean()), 6) for m in masks]
            nonbinary += sum(int(((m > 0) & (m < 1)).sum()) for m in masks)
        cumulated = self.cumulated() or []
        return {"units_used": used, "cumulated_used": [round(float((c > 0.5).float().mean()), 6) for c in cumulated],
                "nonbinary_mask_values": nonbinary}
