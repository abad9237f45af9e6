"""Learning without forgetting (Li & Hoiem, 2017), in van de Ven & Tolias' single-head form.

Before each task the current model is frozen as a teacher; while training, the current task's inputs are
also scored against the teacher's outputs (knowledge distillation at temperature T = 2) over the labels
of the previous tasks (each previous task's own labels in task-IL, every earlier label in class-IL, all
labels in domain-IL). Loss on task t: (1/t) * cross-entropy + (1 - 1/t) * distillation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..benchmarks.base import Task
from ..config import option
from ..training import Context, TrainConfig
from .base import register
from .rehearsal import WeightedReplayClassifier, frozen_classifier, previous_model_loss


@dataclass
class LwFConfig(TrainConfig):
    temperature: float = option(2.0, gt=0)


@register("lwf", "learning without forgetting: distillation from the model before the task on current inputs")
class LwF(WeightedReplayClassifier):
    """LwF: the current batch replayed with the previous model's soft targets."""

    Config = LwFConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.teacher = None  # the model before the current task, only while training

    def has_memory(self) -> bool:
        return self.tasks_learned > 0

    def before_task(self, task: Task, ctx: Context) -> None:
        super().before_task(task, ctx)
        self.teacher = frozen_classifier(self) if self.has_memory() else None

    def replay_loss(self, batch, logits, task, ctx):
        if self.teacher is None:
            return None
        with torch.no_grad():
            targets = self.teacher(batch.x)
        return previous_model_loss(logits, targets, self.info, ctx.task_index, soft=True,
                                   temperature=self.config.temperature)

    def after_task(self, task: Task, ctx: Context) -> None:
        self.teacher = None  # the next task's teacher is this model: nothing to keep in between
