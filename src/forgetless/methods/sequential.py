"""A single-head classifier trained task after task: the base of fine-tuning, joint training and the
regularisation/replay baselines, which extend it through small hooks instead of copying the loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import Task
from ..training import Batch, Context, config_optimizer, fit, label_mask, masked_logits
from .base import Method


class SequentialClassifier(Method):
    """Backbone + one linear head over every output label.

    Training on task t uses cross-entropy over the scenario's active labels (the task's own labels in
    task-IL, as with one head per task; every label seen so far in class-IL; all labels in domain-IL).
    Subclasses override :meth:`extra_loss`, :meth:`before_task`, :meth:`before_step`, :meth:`after_step`,
    :meth:`after_task` or :meth:`training_batches`.
    """

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.backbone = self.make_backbone()
        from ..nn.backbones import feature_width

        self.head = nn.Linear(feature_width(self.backbone, info.input_shape), info.n_outputs)
        self.tasks_learned = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        return self(x)

    def active_mask(self, task_index: int, device=None) -> torch.Tensor:
        return label_mask(self.info.active_labels(task_index), self.info.n_outputs, device)

    # ----------------------------------------------------------------------------------------- hooks
    def before_task(self, task: Task, ctx: Context) -> None:
        """Called before training on ``task`` (e.g. snapshot the previous model)."""

    def extra_loss(self, batch: Batch, logits: torch.Tensor, task: Task, ctx: Context) -> torch.Tensor | None:
        """A term added to the task loss (e.g. a quadratic penalty); None for none."""
        return None

    def before_step(self, batch: Batch, task: Task, ctx: Context) -> None:
        """Called after the backward pass, before gradient clipping and the optimiser step (e.g. project the
        gradient, as A-GEM)."""

    def after_step(self, batch: Batch, task: Task, ctx: Context) -> None:
        """Called after each optimiser step (e.g. accumulate a path integral)."""

    def after_task(self, task: Task, ctx: Context) -> None:
        """Called after training on ``task`` (e.g. compute a Fisher matrix, fill a buffer)."""

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(masked_logits(logits, keep), y)

    def trained_parameters(self) -> list[nn.Parameter]:
        """What the task loop optimises (and clips); a method with a separately trained part narrows it."""
        return list(self.parameters())

    # ---------------------------------------------------------------------------------------- loop
    def learn(self, task: Task, ctx: Context) -> None:
        cfg = self.config
        self.train()
        self.before_task(task, ctx)
        keep = self.active_mask(ctx.task_index, ctx.device)
        params = self.trained_parameters()
        optimizer = config_optimizer(params, cfg)

        def loss_fn(batch: Batch):
            logits = self(batch.x)
            loss = self.task_loss(logits, batch.y, keep)
            extra = self.extra_loss(batch, logits, task, ctx)
            total = loss if extra is None else loss + extra
            return total, {"loss": loss, "total_loss": total}

        fit(ctx, self.training_batches(task, ctx), [optimizer], loss_fn,
            before_step=lambda batch: self.before_step(batch, task, ctx),
            after_step=lambda batch: self.after_step(batch, task, ctx), grad_clip=cfg.grad_clip)
        self.after_task(task, ctx)
        self.tasks_learned += 1

    def training_batches(self, task: Task, ctx: Context):
        cfg = self.config
        return ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations)
