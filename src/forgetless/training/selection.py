"""Best-on-validation model selection: keep the weights at the lowest validation objective seen during a
task and return to them at its end (HAT's and CCGN's protocol; only the current task's validation split is
used, never an old task's data)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..benchmarks.base import Split
from ..distributed import broadcast_object


@torch.no_grad()
def mean_loss(split: Split, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              batch_size: int = 1000) -> float:
    """The sample-weighted mean of ``loss(x, y)`` (a batch mean) over ``split``."""
    total, n = 0.0, 0
    for x, y in split.batches(batch_size):
        total += float(loss(x, y)) * len(y)
        n += len(y)
    return total / max(n, 1)


class BestOnValidation:
    """Snapshots ``modules``' state whenever :meth:`update` sees a new lowest value; :meth:`restore` loads the
    best snapshot back (nothing happens when no value was seen)."""

    def __init__(self, modules: Mapping[str, nn.Module | None]) -> None:
        self.modules = {k: m for k, m in modules.items() if m is not None}
        self.best = math.inf
        self._state: dict[str, Any] | None = None

    def update(self, value: float) -> bool:
        """Record ``value``; True (and a snapshot) when it is the lowest so far. Data-parallel, rank 0's value
        decides on every rank (batch-norm running statistics, and so validation losses, differ per rank)."""
        value = broadcast_object(value)
        if not value < self.best:
            return False
        self.best = value
        self._state = {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}
        return True

    def restore(self) -> bool:
        if self._state is None:
            return False
        for k, m in self.modules.items():
            m.load_state_dict(self._state[k])
        return True
