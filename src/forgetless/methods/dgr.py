"""Deep generative replay (Shin et al., 2017), as set up by van de Ven & Tolias (2019).

A variational autoencoder (:class:`forgetless.memory.VAE`: 2 hidden layers as wide as the classifier's,
400 for split MNIST, latent size 100; Bernoulli likelihood, so inputs must lie in [0, 1]) is trained
alongside the classifier, one step per classifier step. From the second task on, both replay a batch
sampled from the generator as it was before the task: the classifier learns it with the labels the
previous classifier gives it, as hard targets (``dgr``: its most likely label) or soft targets
(``dgr-distill``: distillation at temperature 2); the generator learns to reconstruct it. Both weigh
the current batch 1/t and the replayed one 1 - 1/t. In task-IL a replayed batch is labelled for every
previous task with that task's labels (each previous task's head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..benchmarks.base import Task
from ..config import option
from ..memory import VAE, require_unit_interval, vae_loss
from ..metrics import module_bytes
from ..training import Context, TrainConfig
from .base import register
from .rehearsal import WeightedReplayClassifier, frozen, frozen_classifier, previous_model_loss


@dataclass
class DGRConfig(TrainConfig):
    # van de Ven & Tolias: "a stochastic latent variable layer of size 100"
    latent: int = option(100, ge=1, source="van de Ven & Tolias")
    vae_hidden: tuple[int, ...] | None = None  # None: the classifier's hidden sizes (400, 400)
    vae_lr: float | None = option(None, gt=0)  # None: lr
    temperature: float = option(2.0, gt=0)  # distillation temperature (dgr-distill)
    replay_batch_size: int | None = option(None, ge=1)  # None: batch_size


@register("dgr", "deep generative replay: a VAE's samples replayed with the previous model's labels")
class DGR(WeightedReplayClassifier):
    """Generative replay with hard targets (the previous classifier's predicted label)."""

    Config = DGRConfig
    soft_targets = False

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        hidden = self.config.vae_hidden or self.config.hidden
        self.vae = VAE(info.input_shape, hidden=tuple(hidden), latent=self.config.latent)
        # only while training a task: the frozen generator and classifier of before the task, the
        # generator's optimiser and the batch replayed in the current step
        self.previous_vae = None
        self.teacher = None
        self.vae_optimizer = None
        self.replayed = None

    def has_memory(self) -> bool:
        return self.tasks_learned > 0

    def before_task(self, task: Task, ctx: Context) -> None:
        require_unit_interval(task.train, self.name)
        super().before_task(task, ctx)
        if self.has_memory():
            self.previous_vae = frozen(self.vae)
            self.teacher = frozen_classifier(self)
        # a fresh optimiser per task, like the classifier's (SequentialClassifier.learn); the fused kernel is
        # the same update in one pass (a quarter of the generator's step time on a CPU)
        fused = next(self.vae.parameters()).device.type in ("cpu", "cuda")
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters(), lr=self.config.vae_lr or self.config.lr,
                                              fused=fused)

    def replay_loss(self, batch, logits, task, ctx):
        if self.previous_vae is None:
            return None
        n = self.config.replay_batch_size or self.config.batch_size
        self.replayed = self.previous_vae.sample(n, generator=ctx.generator, device=ctx.device)
        with torch.no_grad():
            targets = self.teacher(self.replayed)
        return previous_model_loss(self(self.replayed), targets, self.info, ctx.task_index, soft=self.soft_targets,
                                   temperature=self.config.temperature)

    def after_step(self, batch, task, ctx) -> None:
        # one generator step on the same current batch and the same replayed batch as the classifier's
        loss = self.generator_loss(batch.x)
        if self.replayed is not None:
            loss = self.current_weight * loss + (1.0 - self.current_weight) * self.generator_loss(self.replayed)
            self.replayed = None
        self.vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.vae_optimizer.step()

    def generator_loss(self, x: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = self.vae(x)
        return vae_loss(recon, x, mu, logvar)

    def after_task(self, task: Task, ctx: Context) -> None:
        self.previous_vae = self.teacher = self.vae_optimizer = self.replayed = None

    def storage(self):
        return {"model_bytes": module_bytes(self.backbone) + module_bytes(self.head),
                "generator_bytes": module_bytes(self.vae)}


@register("dgr-distill", "deep generative replay with distillation: the previous model's soft targets")
class DGRDistill(DGR):
    """Generative replay with soft targets (distillation at temperature T)."""

    soft_targets = True
