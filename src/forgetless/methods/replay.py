"""Experience replay from an episodic buffer (van de Ven & Tolias' "exact"/"exemplar" replay).

After each task a random subset of its training samples joins an :class:`~forgetless.memory.EpisodicBuffer`
of ``buffer_size`` samples shared evenly by the tasks seen (``buffer_size=all`` keeps everything: the
"Full replay" upper bound). Every step also trains on a batch drawn from the buffer with its stored
labels (each over its own task's labels in task-IL); loss on task t: (1/t) * current + (1 - 1/t) * replay.
Drawing a batch costs the same whatever the buffer holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..benchmarks.base import Task
from ..config import option
from ..memory import BufferSize, EpisodicBuffer, buffer_capacity
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from .base import register
from .rehearsal import WeightedReplayClassifier, stored_sample_loss


@dataclass
class ReplayConfig(TrainConfig):
    buffer_size: BufferSize = option(1000, ge=0)  # van de Ven & Tolias' default budget (compare_all.py)
    replay_batch_size: int | None = option(None, ge=1)  # None: batch_size


@register("replay", "experience replay from a random buffer (buffer_size=all: full replay upper bound)")
class Replay(WeightedReplayClassifier):
    """Replay of stored samples with their labels, alongside the current task."""

    Config = ReplayConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.buffer = EpisodicBuffer(buffer_capacity(self.config.buffer_size))

    def has_memory(self) -> bool:
        return len(self.buffer) > 0

    def replay_loss(self, batch, logits, task, ctx):
        if not self.has_memory():
            return None
        n = self.config.replay_batch_size or self.config.batch_size
        # task-IL: tasks drawn uniformly, as van de Ven & Tolias replay every previous task equally
        x, y, tasks = self.buffer.sample(n, ctx.generator, balanced=self.info.scenario == "task", device=ctx.device)
        return stored_sample_loss(self(x), y, tasks, self.info, ctx.task_index)

    def after_task(self, task: Task, ctx: Context) -> None:
        self.buffer.add_task(task.train, ctx.task_index, generator=ctx.generator)

    def storage(self):
        return {"model_bytes": module_bytes(self), "buffer_bytes": self.buffer.nbytes(),
                "buffer_samples": len(self.buffer)}
