"""Re-estimating batch-norm running statistics in one pass at fixed weights (CCGN's end-of-task recalibration,
the DGM classifier probe): running averages gathered while weights moved describe no single set of weights."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def cumulative_statistics(norms: Iterable[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Inside the block, ``norms`` start from reset statistics and average every batch they see in train mode
    equally (momentum None); their momenta are restored on exit. Putting them in train mode is the caller's."""
    norms = list(norms)
    saved = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    try:
        yield
    finally:
        for norm, momentum in zip(norms, saved, strict=True):
            norm.momentum = momentum
