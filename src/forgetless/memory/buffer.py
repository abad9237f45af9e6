"""Episodic memory: a fixed-capacity buffer of past samples, balanced across tasks (or classes).

Shared by every rehearsal method (replay, iCaRL, A-GEM, CCGN's task classifier, SpaceNet-Rehearsal).
Samples are stored raw (uint8 images stay uint8) together with their task's input transform, so a
batch drawn from the buffer is transformed exactly like fresh data of its task.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..benchmarks.base import Split, union
from ..metrics import tensor_bytes

# The one rehearsal option every method shares: a number of stored samples (0: no buffer) or "all" (every
# sample of every task: the "full replay" upper bound).
BufferSize = int | Literal["all"]


def buffer_capacity(size: BufferSize) -> int | None:
    """``all`` -> None (unbounded), else the number of samples."""
    return None if size == "all" else int(size)


class EpisodicBuffer:
    """``capacity`` samples split evenly over the tasks seen (C/t per task, rebalanced after each task).

    ``capacity=None`` keeps everything (the "full replay" upper bound). Which samples a task keeps is a
    random subset by default; :meth:`add_task` accepts an explicit ``order`` (e.g. iCaRL's herding
    ranking) and keeps its prefix, so shrinking a task keeps its most important samples.
    """

    def __init__(self, capacity: int | None) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("buffer capacity must be >= 0 or None (unbounded)")
        self.capacity = capacity
        self.splits: list[Split] = []  # per task, ordered by priority
        self.task_ids: list[int] = []
        self._cache: tuple[Split, torch.Tensor] | None = None  # (union of the splits, task id per sample)

    def __len__(self) -> int:
        return sum(len(s) for s in self.splits)

    def per_task(self, n_tasks: int) -> list[int]:
        if self.capacity is None:
            return [len(s) for s in self.splits]
        base, extra = divmod(self.capacity, max(n_tasks, 1))
        return [base + (1 if t < extra else 0) for t in range(n_tasks)]

    def add_task(self, split: Split, task_id: int, generator: torch.Generator | None = None,
                 order: torch.Tensor | None = None) -> None:
        """Store samples of a new task and shrink the older tasks' shares to C/t each."""
        split = split.to("cpu")
        if order is None:
            order = torch.randperm(len(split), generator=generator)
        quota = len(split) if self.capacity is None else self.per_task(len(self.splits) + 1)[-1]
        self.splits.append(split.subset(order.cpu()[:quota]))
        self.task_ids.append(task_id)
        self._cache = None
        if self.capacity is not None:
            for t, n in enumerate(self.per_task(len(self.splits))):
                if len(self.splits[t]) > n:
                    self.splits[t] = self.splits[t].subset(torch.arange(n))

    def tasks(self) -> torch.Tensor:
        """The task id of every stored sample, in storage order."""
        return self._union()[1]

    def as_split(self) -> Split:
        return self._union()[0]

    def _union(self) -> tuple[Split, torch.Tensor]:
        # Built once per change of the contents (add_task), so that drawing a batch costs O(batch), not
        # O(stored samples): sampling every step must not slow down as the buffer fills.
        if getattr(self, "_cache", None) is None:
            data = union([s for s in self.splits if len(s)])
            tasks = torch.cat([torch.full((len(s),), t, dtype=torch.long)
                               for s, t in zip(self.splits, self.task_ids, strict=True)])
            self._cache = (data, tasks)
        return self._cache

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # a copy of the stored samples: rebuilt on demand, not checkpointed
        return state

    def sample(self, n: int, generator: torch.Generator | None = None, balanced: bool = False,
               device=None, train: bool = True):
        """``n`` stored samples (inputs transformed), their labels and task ids.

        ``balanced=True`` draws the task first (uniformly), then a sample of it, so task labels are
        uniform whatever the stored counts (CCGN's rehearsal); otherwise uniformly over samples.
        """
        data = self.as_split()
        tasks = self.tasks()
        if balanced:
            counts = torch.tensor([len(s) for s in self.splits])
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
            which = torch.randint(len(self.splits), (n,), generator=generator)
            index = offsets[which] + (torch.rand(n, generator=generator) * counts[which]).long()
        else:
            index = torch.randint(len(data), (n,), generator=generator)
        x, y = data.batch(index, train, generator)
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y, tasks[index].to(y.device)

    def nbytes(self) -> int:
        return tensor_bytes([s.x for s in self.splits] + [s.y for s in self.splits])
