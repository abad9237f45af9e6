"""Synaptic intelligence (Zenke et al., 2017).

While training, every parameter accumulates its contribution to the decrease of the loss, the path
integral ``w = sum_steps -g * delta(theta)``; at the end of a task its importance grows by
``w / (delta_task(theta)^2 + xi)`` (xi: damping). Training adds ``c * sum_i omega_i (theta_i - theta*_i)^2``
around the parameters at the end of the previous task. As in van de Ven & Tolias' code, ``g`` is the
gradient of the loss that is minimised (task loss plus penalty) and xi = 0.1. Defaults per scenario:
:mod:`forgetless.methods.published_strengths`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..benchmarks.base import Task
from ..config import option
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from ..training.penalties import Anchor, PathIntegral, detached, quadratic_penalty, trainable
from .base import register
from .published_strengths import published
from .sequential import SequentialClassifier


@dataclass
class SIConfig(TrainConfig):
    c: float = option(5e3, ge=0)  # replaced per benchmark and scenario by defaults()
    xi: float = option(0.1, gt=0)  # damping (van de Ven & Tolias' "epsilon")


@register("si", "synaptic intelligence: quadratic penalty weighted by each parameter's path integral")
class SI(SequentialClassifier):
    """SI: online importance from the optimisation path, one penalty around the latest parameters."""

    Config = SIConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.path: PathIntegral | None = None
        self.anchor: Anchor | None = None

    @classmethod
    def defaults(cls, info):
        return {"c": published("si_c", info)}

    def before_task(self, task: Task, ctx: Context) -> None:
        if self.path is None:  # created here, on the training device, from the initial parameters
            self.path = PathIntegral(trainable(self))

    def extra_loss(self, batch, logits, task, ctx):
        if self.anchor is None:
            return None
        return self.config.c * quadratic_penalty(trainable(self), [self.anchor])

    def after_step(self, batch, task, ctx) -> None:
        self.path.step(trainable(self))

    def after_task(self, task: Task, ctx: Context) -> None:
        params = trainable(self)
        omega = self.path.consolidate(params, self.config.xi)
        if self.anchor is not None:
            omega = {n: o + self.anchor.importance[n] for n, o in omega.items()}
        self.anchor = Anchor(detached(params), omega)

    def storage(self):
        return {"model_bytes": module_bytes(self), "penalty_bytes": self.anchor.nbytes() if self.anchor else 0,
                "path_integral_bytes": self.path.nbytes() if self.path else 0}
