"""What the replay-style baselines (LwF, replay, A-GEM, DGR) share: the 1/t weighting of the current task,
the loss of a replayed batch in each scenario, and frozen copies of the model.

Weighting (van de Ven & Tolias' code, ``rnt = 1/t``): on task t with replay, the loss is
``(1/t) * L_current + (1 - 1/t) * L_replay``, so every task seen so far weighs the same.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import BenchmarkInfo, Task
from ..training import Batch, Context, masked_logits
from ..training.distillation import hard_target_loss, soft_target_loss
from .sequential import SequentialClassifier


def frozen(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode that never trains (a teacher, a previous generator)."""
    clone = copy.deepcopy(module).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def frozen_classifier(model: SequentialClassifier) -> nn.Module:
    """The classifier as it is now (backbone + head), frozen; other submodules (generators, teachers) are left out."""
    return frozen(nn.Sequential(model.backbone, model.head))


def replay_label_sets(info: BenchmarkInfo, task_index: int) -> list[tuple[list[int], list[int]]]:
    """(student labels, teacher labels) over which replayed inputs are scored on task ``task_index``.

    Task-IL: one pair per previous task, that task's own labels (one head per task). Class-IL: the student
    over every label so far, the teacher over the labels before this task. Domain-IL: all labels.
    """
    if info.scenario == "task":
        return [(list(info.task_labels[j]), list(info.task_labels[j])) for j in range(task_index)]
    if info.scenario == "class":
        return [(info.active_labels(task_index), info.active_labels(task_index - 1))]
    everything = list(range(info.n_outputs))
    return [(everything, everything)]


def previous_model_loss(student: torch.Tensor, teacher: torch.Tensor, info: BenchmarkInfo, task_index: int,
                        soft: bool, temperature: float = 2.0) -> torch.Tensor:
    """Loss of the student on replayed inputs labelled by the previous model: distillation (``soft``) or
    cross-entropy against the previous model's prediction, averaged over the label sets of the scenario."""
    losses = []
    for s_labels, t_labels in replay_label_sets(info, task_index):
        if soft:
            losses.append(soft_target_loss(student, teacher, s_labels, t_labels, temperature))
        else:
            losses.append(hard_target_loss(student, teacher, s_labels, t_labels))
    return torch.stack(losses).mean()


def stored_sample_loss(logits: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor, info: BenchmarkInfo,
                       task_index: int) -> torch.Tensor:
    """Cross-entropy of stored samples with their true labels: each over its own task's labels in task-IL
    (one head per task), over every label seen so far in class-IL, over all labels in domain-IL."""
    if info.scenario == "task":
        keep = info.task_label_masks(logits.device)[tasks]
    else:
        keep = torch.zeros(info.n_outputs, dtype=torch.bool, device=logits.device)
        keep[info.active_labels(task_index)] = True
    return F.cross_entropy(masked_logits(logits, keep), y)


class WeightedReplayClassifier(SequentialClassifier):
    """A single-head classifier whose loss on task t is (1/t) * current + (1 - 1/t) * replay.

    Subclasses say whether they have anything to replay (:meth:`has_memory`) and compute the replay
    loss (:meth:`replay_loss`); without memory the current loss has weight 1.
    """

    current_weight: float = 1.0

    def has_memory(self) -> bool:
        return False

    def replay_loss(self, batch: Batch, logits: torch.Tensor, task: Task, ctx: Context) -> torch.Tensor | None:
        return None

    def before_task(self, task: Task, ctx: Context) -> None:
        self.current_weight = 1.0 / (ctx.task_index + 1) if self.has_memory() else 1.0

    def task_loss(self, logits, y, keep):
        return self.current_weight * super().task_loss(logits, y, keep)

    def extra_loss(self, batch, logits, task, ctx):
        replay = self.replay_loss(batch, logits, task, ctx)
        return None if replay is None else (1.0 - self.current_weight) * replay
