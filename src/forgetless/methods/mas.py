"""Memory aware synapses (Aljundi et al., 2018).

After each task, a parameter's importance grows by the mean over the task's training samples of the
absolute gradient of the squared L2 norm of the network's output (the outputs in play: the task's own
labels in task-IL, every label so far in class-IL, all in domain-IL). Training adds
``lambda * sum_i omega_i (theta_i - theta*_i)^2`` around the parameters after the previous task
(Aljundi et al., Eq. 3-4). Defaults per scenario: :mod:`forgetless.methods.published_strengths`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..benchmarks.base import Task
from ..config import option
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from ..training.penalties import Anchor, detached, output_sensitivity, quadratic_penalty, trainable
from .base import register
from .published_strengths import published
from .sequential import SequentialClassifier


@dataclass
class MASConfig(TrainConfig):
    mas_lambda: float = option(1.0, ge=0)  # replaced per benchmark and scenario by defaults()
    importance_samples: int | None = option(None, ge=1)  # None: every training sample of the task


@register("mas", "memory aware synapses: penalty weighted by the output's sensitivity to each parameter")
class MAS(SequentialClassifier):
    """MAS: importance accumulated over tasks, one penalty around the latest parameters."""

    Config = MASConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.anchor: Anchor | None = None

    @classmethod
    def defaults(cls, info):
        return {"mas_lambda": published("mas_lambda", info)}

    def extra_loss(self, batch, logits, task, ctx):
        if self.anchor is None:
            return None
        return self.config.mas_lambda * quadratic_penalty(trainable(self), [self.anchor])

    def after_task(self, task: Task, ctx: Context) -> None:
        omega = output_sensitivity(self, task.train, self.info.active_labels(ctx.task_index),
                                   samples=self.config.importance_samples, generator=ctx.generator,
                                   device=ctx.device)
        if self.anchor is not None:
            omega = {n: o + self.anchor.importance[n] for n, o in omega.items()}
        self.anchor = Anchor(detached(trainable(self)), omega)

    def storage(self):
        return {"model_bytes": module_bytes(self), "penalty_bytes": self.anchor.nbytes() if self.anchor else 0}
