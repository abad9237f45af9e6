"""The shared mini-batch loop: loss -> backward -> gradient surgery -> clipped optimiser steps on a step-decayed
learning rate -> per-step hook. Methods with their own kind of step (GAN updates, lookahead, rewiring) call
:meth:`~forgetless.training.Context.batches` directly instead."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..distributed import all_reduce_gradients, optimizer_params
from .context import Batch, Context
from .optim import step_decay

LossResult = torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]


def fit(ctx: Context, batches: Iterable[Batch], optimizers: Sequence[torch.optim.Optimizer | None],
        loss_fn: Callable[[Batch], LossResult], decay_at: Sequence[float] = (), decay_factor: float = 0.1,
        before_step: Callable[[Batch], None] | None = None, after_step: Callable[[Batch], None] | None = None,
        grad_clip: float | None = None, phase: str | None = None) -> None:
    """The shared minibatch loop over ``batches`` (from :meth:`Context.batches`): ``loss_fn(batch)`` -> backward
    -> ``before_step`` (gradient surgery: masking, projection) -> gradient-norm clipping -> step every optimiser
    (learning rates multiplied by ``decay_factor`` at each fraction ``decay_at`` of the task) -> ``after_step``.

    ``loss_fn`` returns the loss, or ``(loss, values)`` where ``values`` are what to log at log points instead
    of the loss alone (tensors are read back only there).
    """
    optimizers = [o for o in optimizers if o is not None]
    base = [[g["lr"] for g in o.param_groups] for o in optimizers]
    current = 1.0
    for batch in batches:
        factor = step_decay(batch.step, batch.total, decay_at, decay_factor)
        if factor != current:
            current = factor
            for o, lrs in zip(optimizers, base, strict=True):
                for g, lr in zip(o.param_groups, lrs, strict=True):
                    g["lr"] = lr * factor
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        out = loss_fn(batch)
        loss, logged = out if isinstance(out, tuple) else (out, {"loss": out})
        loss.backward()
        if ctx.world_size > 1:  # the global batch's gradient, before any surgery or clipping sees it
            all_reduce_gradients(optimizer_params(*optimizers), batch.share)
        if before_step is not None:
            before_step(batch)
        if grad_clip:
            for o in optimizers:
                nn.utils.clip_grad_norm_([p for g in o.param_groups for p in g["params"]], grad_clip)
        for o in optimizers:
            o.step()
        if after_step is not None:
            after_step(batch)
        if ctx.should_log(batch):
            ctx.log(step=batch.step, epoch=batch.epoch, **logged, **({"phase": phase} if phase else {}))
