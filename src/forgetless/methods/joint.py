"""Joint training: after each task, train on the data of every task seen so far (upper bound)."""

from __future__ import annotations

from ..benchmarks.base import Split, Task, union
from ..metrics import tensor_bytes
from ..training import Context
from .base import register
from .sequential import SequentialClassifier


@register("joint", "trains on the union of all tasks seen so far (upper bound)")
class Joint(SequentialClassifier):
    """Keeps every task's training data and, at task t, continues training on tasks 1..t together.

    The budget per task (epochs or iterations) is the same as fine-tuning's, counted over the union.
    In task-IL each sample's loss is restricted to its own task's labels.
    """

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.seen: list[Split] = []

    def learn(self, task: Task, ctx: Context) -> None:
        self.seen.append(task.train.to("cpu"))
        super().learn(task, ctx)

    def training_batches(self, task: Task, ctx: Context):
        cfg = self.config
        data = union(self.seen).to(ctx.device)
        return ctx.batches(data, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations)

    def task_loss(self, logits, y, keep):
        if self.info.scenario == "task":
            # Labels are disjoint across tasks in task-IL: each sample's own task follows from its label,
            # and its loss is restricted to that task's labels (one head per task).
            keep = self.info.task_label_masks(y.device)[self.info.label_task(y.device)[y]]
        return super().task_loss(logits, y, keep)

    def storage(self):
        out = super().storage()
        out["stored_data_bytes"] = tensor_bytes([s.x for s in self.seen] + [s.y for s in self.seen])
        return out
