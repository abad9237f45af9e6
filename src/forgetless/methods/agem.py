"""Averaged gradient episodic memory (A-GEM; Chaudhry et al., 2019).

Each step, the gradient g of the current batch is compared with the gradient g_ref of a batch drawn from
the episodic memory (random samples of the previous tasks, shared evenly); if they disagree (g . g_ref < 0)
g is projected to ``g - (g . g_ref / g_ref . g_ref) g_ref`` before the optimiser step, so that the loss on
the memory does not increase to first order. The memory is only a constraint: it is not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..benchmarks.base import Task
from ..config import option
from ..memory import BufferSize, EpisodicBuffer, buffer_capacity
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from ..training.penalties import trainable
from .base import register
from .rehearsal import stored_sample_loss
from .sequential import SequentialClassifier


@dataclass
class AGEMConfig(TrainConfig):
    buffer_size: BufferSize = option(1000, ge=0)  # van de Ven & Tolias' default budget (compare_all.py)
    replay_batch_size: int | None = option(None, ge=1)  # reference batch; None: batch_size


def project(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """A-GEM's projection, in place: returns whether the gradient was projected (a 0-d bool tensor).

    Without a branch on the dot product (a host read per step): the scale is 0 when the gradient does not
    conflict with the reference, and subtracting 0 * r leaves it exactly as it was."""
    dot = sum((g * r).sum() for g, r in zip(grads, reference, strict=True))
    norm = sum(r.pow(2).sum() for r in reference)
    scale = dot.clamp(max=0) / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    for g, r in zip(grads, reference, strict=True):
        g.sub_(scale * r)
    return dot < 0


@register("agem", "averaged gradient episodic memory: project gradients that would raise the memory's loss")
class AGEM(SequentialClassifier):
    """A-GEM with a random episodic memory."""

    Config = AGEMConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.buffer = EpisodicBuffer(buffer_capacity(self.config.buffer_size))
        self.projections = 0  # steps whose gradient was projected (reported)

    def before_step(self, batch, task, ctx) -> None:
        if len(self.buffer) == 0:
            return
        n = self.config.replay_batch_size or self.config.batch_size
        x, y, tasks = self.buffer.sample(n, ctx.generator, balanced=self.info.scenario == "task", device=ctx.device)
        params = [p for p in trainable(self).values() if p.grad is not None]
        loss = stored_sample_loss(self(x), y, tasks, self.info, ctx.task_index)
        reference = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(p.grad, r) for p, r in zip(params, reference, strict=True) if r is not None]
        if pairs:  # counted on the device, read back only when reported
            self.projections = self.projections + project([g for g, _ in pairs], [r for _, r in pairs]).long()

    def after_task(self, task: Task, ctx: Context) -> None:
        self.buffer.add_task(task.train, ctx.task_index, generator=ctx.generator)

    def storage(self):
        return {"model_bytes": module_bytes(self), "buffer_bytes": self.buffer.nbytes(),
                "buffer_samples": len(self.buffer)}

    def report(self):
        return {"projected_steps": int(self.projections)}
