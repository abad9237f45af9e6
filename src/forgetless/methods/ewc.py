"""Elastic weight consolidation (Kirkpatrick et al., 2017) and its online variant (Schwarz et al., 2018).

EWC keeps, for every finished task k, the parameters theta*_k and the diagonal Fisher F_k computed on that
task's training data after training on it, and adds ``lambda/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2``.
Online EWC keeps a single term: the running Fisher F~ = F_t + gamma * F~ and the latest parameters, and
adds ``lambda/2 * sum_i gamma * F~_i (theta_i - theta*_i)^2`` (Schwarz et al., Eq. 7; van de Ven & Tolias'
code applies the decay in the penalty the same way).

The Fisher uses the model's own predictions as labels and the softmax over the outputs in play for the
task (its own labels in task-IL, every label so far in class-IL, all in domain-IL), as in van de Ven &
Tolias (2019). Defaults per scenario: :mod:`forgetless.methods.published_strengths`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..benchmarks.base import Task
from ..config import option
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from ..training.penalties import Anchor, detached, fisher_diagonal, quadratic_penalty, trainable
from .base import register
from .published_strengths import published
from .sequential import SequentialClassifier


@dataclass
class EWCConfig(TrainConfig):
    ewc_lambda: float = option(1e9, ge=0)  # replaced per benchmark and scenario by defaults()
    fisher_samples: int | None = option(None, ge=1)  # None: every training sample of the task
    empirical_fisher: bool = False  # True: the true label instead of the model's prediction


@register("ewc", "elastic weight consolidation: a Fisher-weighted quadratic penalty per finished task")
class EWC(SequentialClassifier):
    """EWC with one quadratic term per finished task (Kirkpatrick et al., 2017)."""

    Config = EWCConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.anchors: list[Anchor] = []

    @classmethod
    def defaults(cls, info):
        return {"ewc_lambda": published("ewc_lambda", info)}

    @property
    def strength(self) -> float:
        return self.config.ewc_lambda

    def extra_loss(self, batch, logits, task, ctx):
        if not self.anchors:
            return None
        return 0.5 * self.strength * quadratic_penalty(trainable(self), self.anchors)

    def after_task(self, task: Task, ctx: Context) -> None:
        fisher = fisher_diagonal(self, task.train, self.info.active_labels(ctx.task_index),
                                 empirical=self.config.empirical_fisher, samples=self.config.fisher_samples,
                                 generator=ctx.generator, device=ctx.device)
        self.consolidate(fisher)

    def consolidate(self, fisher) -> None:
        self.anchors.append(Anchor(detached(trainable(self)), fisher))

    def storage(self):
        return {"model_bytes": module_bytes(self), "penalty_bytes": sum(a.nbytes() for a in self.anchors)}


@dataclass
class OnlineEWCConfig(EWCConfig):
    # decay of the running Fisher; replaced per benchmark and scenario by defaults()
    gamma: float = option(1.0, ge=0, le=1)


@register("online-ewc", "online EWC: one running Fisher (decay gamma) around the latest parameters")
class OnlineEWC(EWC):
    """Online EWC (Schwarz et al., 2018): a single penalty around the latest parameters."""

    Config = OnlineEWCConfig

    @classmethod
    def defaults(cls, info):
        return {"ewc_lambda": published("online_lambda", info), "gamma": published("gamma", info)}

    @property
    def strength(self) -> float:
        # the decay also multiplies the running Fisher inside the penalty (Schwarz et al., 2018)
        return self.config.ewc_lambda * self.config.gamma

    def consolidate(self, fisher) -> None:
        if self.anchors:
            running = self.anchors[0].importance
            fisher = {n: f + self.config.gamma * running[n] for n, f in fisher.items()}
        self.anchors = [Anchor(detached(trainable(self)), fisher)]
