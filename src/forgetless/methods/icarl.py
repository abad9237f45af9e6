"""iCaRL: incremental classifier and representation learning (Rebuffi et al., 2017), class-incremental.

- Memory: ``buffer_size`` exemplars shared evenly by the classes seen; a new class's exemplars are chosen
  by herding on the L2-normalised features (``selection=random``: at random, "iCaRL-rand" in Abati et al.).
- Training: on the current task's data together with the exemplars, with a sigmoid (binary cross-entropy)
  loss per output: one-hot targets for the new classes, the previous model's sigmoid outputs (distillation)
  for the old ones. As in van de Ven & Tolias' code, the previous model's scores are divided by a
  temperature (2) before the sigmoid; ``temperature=1`` is Rebuffi et al.'s original.
- Classification: nearest mean of exemplars, on L2-normalised features (``nme=false``: the network's outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..benchmarks.base import Task, union
from ..config import option
from ..memory import BufferSize, EpisodicBuffer, buffer_capacity
from ..memory.herding import class_balanced_order
from ..metrics import module_bytes
from ..training import Context, TrainConfig, label_mask
from ..training.distillation import binary_soft_targets
from .base import register
from .rehearsal import frozen_classifier
from .sequential import SequentialClassifier

FEATURE_BATCH = 1024


@dataclass
class ICaRLConfig(TrainConfig):
    # icarl needs exemplars (at least one, or all); van de Ven & Tolias (2019), Table 4: "iCaRL (budget = 2000)"
    buffer_size: BufferSize = option(2000, ge=1, source="van de Ven & Tolias (2019), Table 4")
    selection: Literal["herding", "random"] = "herding"
    temperature: float = option(2.0, gt=0)  # divides the previous model's scores before the sigmoid (1: Rebuffi et al.)
    nme: bool = True  # classify by the nearest mean of exemplars


@register("icarl", "iCaRL: exemplars by herding, sigmoid distillation, nearest-mean-of-exemplars classifier")
class ICaRL(SequentialClassifier):
    """iCaRL (class-incremental only: its classifier and distillation assume one growing label set)."""

    Config = ICaRLConfig
    scenarios = ("class",)

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.buffer = EpisodicBuffer(buffer_capacity(self.config.buffer_size))
        self.teacher = None  # the model before the current task, only while training
        self.register_buffer("class_means", None)  # (outputs x features), L2-normalised
        self.register_buffer("has_mean", torch.zeros(info.n_outputs, dtype=torch.bool))

    # ------------------------------------------------------------------------------------- training
    def training_batches(self, task: Task, ctx: Context):
        data = task.train
        if len(self.buffer):
            data = union([task.train, self.buffer.as_split().to(task.train.device)])
        return ctx.batches(data, self.config.batch_size, epochs=self.config.epochs, iterations=self.config.iterations)

    def before_task(self, task: Task, ctx: Context) -> None:
        self.teacher = frozen_classifier(self) if self.tasks_learned else None
        self.new_labels = label_mask(task.labels, self.info.n_outputs, ctx.device)
        self.old_labels = self.active_mask(ctx.task_index, ctx.device) & ~self.new_labels

    def task_loss(self, logits, y, keep):
        # one binary classifier per new class, summed over classes and averaged over samples
        targets = (y.unsqueeze(1) == torch.nonzero(self.new_labels).flatten()).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits[:, self.new_labels], targets, reduction="none").sum(1).mean()

    def extra_loss(self, batch, logits, task, ctx):
        if self.teacher is None:
            return None
        with torch.no_grad():
            targets = binary_soft_targets(self.teacher(batch.x)[:, self.old_labels], self.config.temperature)
        return F.binary_cross_entropy_with_logits(logits[:, self.old_labels], targets, reduction="none").sum(1).mean()

    def after_task(self, task: Task, ctx: Context) -> None:
        self.teacher = None
        quota = self.buffer.per_task(len(self.buffer.splits) + 1)[-1]
        per_class = -(-quota // len(task.labels))
        features = None if self.config.selection == "random" else self.features(task.train, ctx.device)
        order = class_balanced_order(task.train.y, per_class, features, ctx.generator)
        self.buffer.add_task(task.train, ctx.task_index, order=order)
        self.update_class_means(ctx.device)

    # ------------------------------------------------------------------------------- classification
    @torch.no_grad()
    def features(self, split, device) -> torch.Tensor:
        """L2-normalised penultimate features of every sample of ``split`` (eval mode, no augmentation)."""
        was_training = self.training
        self.eval()
        out = [F.normalize(self.backbone(x.to(device)), dim=1) for x, _ in split.batches(FEATURE_BATCH)]
        self.train(was_training)
        return torch.cat(out)

    def update_class_means(self, device) -> None:
        data = self.buffer.as_split()
        feats = self.features(data, device).float()  # the means stay float32 under bf16 autocast
        y = data.y.to(device)
        sums = torch.zeros(self.info.n_outputs, feats.shape[1], device=device).index_add_(0, y, feats)
        self.has_mean = torch.bincount(y, minlength=self.info.n_outputs) > 0
        self.class_means = F.normalize(sums, dim=1)

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if not self.config.nme or self.class_means is None:
            return self(x)
        f = F.normalize(self.backbone(x), dim=1)
        distance = 2.0 - 2.0 * f @ self.class_means.t()  # ||f - mean||^2 for unit vectors
        return (-distance).masked_fill(~self.has_mean, float("-inf"))

    def storage(self):
        return {"model_bytes": module_bytes(self), "buffer_bytes": self.buffer.nbytes(),
                "buffer_samples": len(self.buffer)}
