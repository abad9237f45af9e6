"""Elastic weight consolidation (Kirkpatrick et al., 2017) and its online variant (Schwarz et al., 2018).

EWC keeps, for every finished task k, the parameters theta*_k and the diagonal Fisher F_k computed on that
task's training data after training on it, and adds ``lambda/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2``.
That sum is kept as one quadratic, ``A (theta - mu)^2 + D`` (:class:`~forgetless.training.penalties.AnchorSum`):
the same loss and gradient to float rounding, but a step and a state that stay flat with the number of tasks
(a loop over the stored terms made a step at task 10 of permuted MNIST 3.7x a fine-tuning step).
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
from ..training.penalties import AnchorSum, fisher_diagonal, trainable
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
        self.penalty_terms = AnchorSum()

    def __setstate__(self, state) -> None:
        # checkpoints written before the sum kept one Anchor per task: fold them in
        old = state.pop("anchors", None)
        super().__setstate__(state)
        if old is not None and "penalty_terms" not in state:
            self.penalty_terms = AnchorSum()
            for anchor in old:
                self.penalty_terms.add(anchor.params, anchor.importance)

    @classmethod
    def defaults(cls, info):
        return {"ewc_lambda": published("ewc_lambda", info)}

    @property
    def strength(self) -> float:
        return self.config.ewc_lambda

    def extra_loss(self, batch, logits, task, ctx):
        if self.penalty_terms.anchor is None:
            return None
        return 0.5 * self.strength * self.penalty_terms.penalty(trainable(self))

    def after_task(self, task: Task, ctx: Context) -> None:
        fisher = fisher_diagonal(self, task.train, self.info.active_labels(ctx.task_index),
                                 empirical=self.config.empirical_fisher, samples=self.config.fisher_samples,
                                 generator=ctx.generator, device=ctx.device)
        self.consolidate(fisher)

    def consolidate(self, fisher) -> None:
        self.penalty_terms.add(trainable(self), fisher)

    def storage(self):
        return {"model_bytes": module_bytes(self), "penalty_bytes": self.penalty_terms.nbytes()}


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
        previous = self.penalty_terms.anchor
        if previous is not None:
            fisher = {n: f + self.config.gamma * previous.importance[n] for n, f in fisher.items()}
        self.penalty_terms = AnchorSum()  # one term around the latest parameters: no constant
        self.penalty_terms.add(trainable(self), fisher)
