"""Control of batch-norm running statistics, in one place: which layers are batch norms, keeping statistics
still (Piggyback's ``train_nobn``; rehearsal batches of other tasks in CCGN), and re-estimating them in one
pass at fixed weights (CCGN's end-of-task recalibration, the DGM classifier probe): running averages gathered
while weights moved describe no single set of weights."""

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


def norm_layers(module: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``module`` (the slots of task batch norms included)."""
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def freeze_norm_statistics(module: nn.Module) -> None:
    """Put every batch norm of ``module`` in eval mode (running statistics stop moving), whatever the
    mode of the rest: Piggyback's ``train_nobn``. Call after ``module.train()``."""
    for m in norm_layers(module):
        m.eval()


@contextmanager
def fixed_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norms in ``module`` normalise with batch statistics (training mode) but leave their running
    statistics untouched (momentum 0), e.g. while rehearsal batches of other tasks flow through a task's
    gating module."""
    norms = list(norm_layers(module))
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(norms, saved, strict=True):
            m.momentum = mom
