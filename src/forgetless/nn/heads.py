"""Classification heads: one head over every output, or one head per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultiHead(nn.Module):
    """One linear head per task, writing its logits into the task's label positions.

    With ``task_id`` only that head runs and every other position is ``-inf``; without it every head runs
    (the labels of different tasks are disjoint in the task and class scenarios).
    """

    def __init__(self, in_features: int, task_labels: Sequence[Sequence[int]], n_outputs: int) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.heads = nn.ModuleList(nn.Linear(in_features, len(labels)) for labels in task_labels)
        for t, labels in enumerate(task_labels):
            self.register_buffer(f"labels_{t}", torch.tensor(list(labels), dtype=torch.long), persistent=False)

    def labels(self, task_id: int) -> torch.Tensor:
        return getattr(self, f"labels_{task_id}")

    def forward(self, features: torch.Tensor, task_id: int | None = None, upto: int | None = None) -> torch.Tensor:
        tasks = [task_id] if task_id is not None else range(len(self.heads) if upto is None else upto + 1)
        parts = [(self.labels(t), self.heads[t](features)) for t in tasks]
        # the heads' dtype, not the features': under bfloat16 autocast a linear layer's output is bfloat16
        out = parts[0][1].new_full((features.shape[0], self.n_outputs), float("-inf"))
        for labels, logits in parts:
            out[:, labels] = logits
        return out
