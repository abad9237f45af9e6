"""The one optimiser factory and the step learning-rate schedule every method trains with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn


def make_optimizer(params: Iterable[nn.Parameter], kind: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, fused: bool = False) -> torch.optim.Optimizer | None:
    """Adam or SGD (with momentum) over the trainable ``params``; None when there are none.

    ``fused``: torch's fused kernel where it has one for the parameters' device and dtype (one pass per step
    instead of several: the mask methods update as many scores as the network has weights); the default
    multi-tensor kernel otherwise. The two differ in the last bits, so each method keeps the kernel its
    reproduction rows were measured with.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return None
    options: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if kind != "adam":
        options["momentum"] = momentum
    cls = torch.optim.Adam if kind == "adam" else torch.optim.SGD
    if fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return cls(params, **options, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
            pass
    return cls(params, **options)


def config_optimizer(params: Iterable[nn.Parameter], config: Any, lr: float | None = None,
                     fused: bool = False) -> torch.optim.Optimizer:
    """:func:`make_optimizer` with a :class:`~forgetless.training.TrainConfig`'s optimiser, momentum and weight
    decay (``lr`` defaults to the config's)."""
    optimizer = make_optimizer(params, config.optimizer, config.lr if lr is None else lr, config.momentum,
                               config.weight_decay, fused=fused)
    if optimizer is None:
        raise ValueError("no trainable parameters to optimise")
    return optimizer


def step_decay(step: int, total: int, at: Sequence[float], factor: float) -> float:
    """The lr multiplier at ``step`` of ``total``: ``factor`` to the number of fractions in ``at`` passed."""
    return factor ** sum(step >= round(f * total) for f in at)
