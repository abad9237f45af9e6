"""Hypernetwork-protected replay (von Oswald et al., 2020, Sec. 2.3 and Appendix B): ``hnet-tir`` and ``hnet-r``.

Both keep a VAE replay memory whose decoder weights come from its own task-conditioned hypernetwork
(:class:`~forgetless.memory.hnet_vae.HnetVAE`, protected by the output regularizer instead of by replay).
The replay model is trained on each task after the classifiers (it is not needed after the last task).

- ``hnet-tir`` (HNET+TIR): the classifier is the task-conditioned hypernetwork of ``hnet``; a separate task
  inference network (an MLP with one output per task, a growing head) learns to name the task of an input
  from current data (labelled with the current task) mixed with replayed data (labelled with the task the
  sample was generated for: hard targets), and picks the embedding outside task-IL. In task-IL the task is
  given, so neither the task-inference network nor the replay model is needed (as in the authors' code).
- ``hnet-r`` (HNET+R): only the replay model is hypernetwork-protected. The classifier is an ordinary
  network trained on current data mixed with replayed data whose targets are the soft outputs (temperature
  2, as in DGR+distill) of the classifier saved before the task.

Replay batches hold ceil(batch / t) samples of each of the t past tasks, and the loss weighs current and
replayed data 1/2 each (``replay_weight``), as in the authors' code and van de Ven & Tolias (2019).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option
from ..memory import require_unit_interval
from ..memory.hnet_vae import HnetVAE
from ..metrics import module_bytes
from ..nn import backbones
from ..training import Context, TrainConfig, config_optimizer, label_mask, masked_logits
from ..training.distillation import masked_soft_target_loss
from ..training.task_inference import most_likely_task
from .base import register
from .hnet import HnetClassifier, HnetConfig, hnet_defaults
from .sequential import SequentialClassifier


@dataclass
class ReplayConfig:
    """The hypernetwork-protected VAE (split MNIST defaults, Appendix C) and how replay enters the loss."""

    replay_weight: float = option(0.5, ge=0, lt=1)  # loss = (1 - w) current + w replayed (the authors' l_rew)
    vae_enc_hidden: tuple[int, ...] = (400, 400)
    vae_dec_hidden: tuple[int, ...] = (250, 350)  # input -> output order
    vae_latent: int = option(100, ge=1)
    vae_condition_dim: int = option(100, ge=1)
    # fixed per-task decoder input: N(0, I) draw (Appendix C) or "onehot"
    vae_condition: Literal["gaussian", "onehot"] = option("gaussian", source="Appendix C")
    vae_hnet_hidden: tuple[int, ...] = (10, 10)
    vae_hnet_activation: str = "elu"
    vae_chunk_size: int | None = 50000
    vae_emb_dim: int = 96
    vae_chunk_emb_dim: int = 96
    vae_beta: float = option(0.01, ge=0)
    vae_lr: float | None = None  # None: the classifier's lr (equal in every setting of the paper)


def replay_defaults(info, tir: bool) -> dict[str, Any]:
    """Appendix C: the VAE and its hypernetwork per benchmark (split MNIST's are the dataclass defaults)."""
    if info.name.startswith("permuted"):
        return dict(vae_enc_hidden=(1000, 1000), vae_dec_hidden=(1000, 1000) if tir else (400, 400),
                    vae_hnet_hidden=(25, 25), vae_chunk_size=85000, vae_emb_dim=24, vae_chunk_emb_dim=8,
                    vae_beta=0.05)
    return dict(vae_dec_hidden=(50, 150), vae_beta=0.05) if tir else {}


def build_replay(method, cfg) -> HnetVAE:
    return HnetVAE(method.info.input_shape, cfg.vae_enc_hidden, cfg.vae_dec_hidden, cfg.vae_latent,
                   cfg.vae_condition_dim, cfg.vae_condition, cfg.vae_hnet_hidden, cfg.vae_chunk_size,
                   cfg.vae_emb_dim, cfg.vae_chunk_emb_dim, cfg.vae_hnet_activation, cfg.vae_beta)


def train_replay(method, task, ctx: Context) -> None:
    """Train the replay model on ``task`` unless it is the last one (its data will never be replayed)."""
    if ctx.task_index >= method.info.n_tasks - 1:
        return
    cfg = method.config
    lr = cfg.vae_lr or cfg.lr
    method.replay.learn_task(task.train, ctx, cfg.iterations, cfg.epochs, cfg.batch_size,
                             lambda params, rate: config_optimizer(params, cfg, rate, fused=True), lr)


def replay_storage(replay: HnetVAE) -> dict[str, Any]:
    """Bytes of what the replay memory keeps: the decoder hypernetwork, its embeddings and conditions
    (the encoder is only needed while learning but is kept too)."""
    return {"replay_bytes": module_bytes(replay),
            "replay_compression_ratio": (replay.hnet.n_theta() + replay.hnet.n_tasks * replay.hnet.emb_dim)
            / replay.decoder.n_weights}


# -------------------------------------------------------------------------------------------- HNET+TIR

@dataclass
class HnetTirConfig(HnetConfig, ReplayConfig):
    """``hnet`` options, the task-inference network (``tir_hidden``) and the replay model (``vae_*``).
    Split MNIST: VAE decoder 50-150 with beta 0.05 (Appendix C)."""

    tir_hidden: tuple[int, ...] = (400, 400)
    vae_dec_hidden: tuple[int, ...] = (50, 150)
    vae_beta: float = 0.05


@register("hnet-tir", "HNET+TIR: hypernetwork classifier + task-inference network protected by hnet-VAE replay")
class HnetTIR(HnetClassifier):
    Config = HnetTirConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        cfg = self.config
        self.inference_needed = info.scenario != "task"
        if self.inference_needed:
            body = backbones.create("mlp", info.input_shape, hidden=tuple(cfg.tir_hidden))
            self.task_inference = nn.Sequential(body, nn.Linear(body.out_features, info.n_tasks))
            self.replay = build_replay(self, cfg)

    @classmethod
    def defaults(cls, info):
        out = {**hnet_defaults(info), **replay_defaults(info, tir=True)}
        if info.name.startswith("permuted"):
            out["tir_hidden"] = (1000, 1000)
        return out

    def before_task(self, task, ctx: Context) -> None:
        if self.inference_needed:
            require_unit_interval(task.train, self.name)
        t = self.hnet.n_tasks
        if self.inference_needed and t > 0:
            self.learn_task_inference(task, ctx, t)

    def after_task(self, task, ctx: Context) -> None:
        if self.inference_needed:
            train_replay(self, task, ctx)

    def learn_task_inference(self, task, ctx: Context, t: int) -> None:
        """Eq. 6: cross-entropy over tasks 0..t on current data (label t) and replayed data (its task)."""
        cfg = self.config
        net = self.task_inference
        net.train()
        opt = config_optimizer(net.parameters(), cfg, cfg.lr, fused=True)
        w = cfg.replay_weight
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations,
                                 desc="task inference"):
            x_r, t_r = self.replay.replay(cfg.batch_size, t, ctx.generator)
            real = F.cross_entropy(net(batch.x)[:, : t + 1], torch.full_like(batch.y, t))
            fake = F.cross_entropy(net(x_r)[:, : t + 1], t_r)
            loss = (1 - w) * real + w * fake
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ctx.should_log(batch):
                ctx.log(step=batch.step, task_inference_loss=loss.detach())

    def choose_tasks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.hnet.n_tasks == 1:
            return torch.zeros(len(x), dtype=torch.long, device=x.device), None
        return most_likely_task(self.task_inference(x), self.hnet.n_tasks), None

    def storage(self) -> dict[str, Any]:
        out = super().storage()
        if self.inference_needed:
            out["task_inference_bytes"] = module_bytes(self.task_inference)
            out.update(replay_storage(self.replay))
            out["model_bytes"] += out["task_inference_bytes"] + out["replay_bytes"]
        return out


# ---------------------------------------------------------------------------------------------- HNET+R


@dataclass
class HnetRConfig(TrainConfig, ReplayConfig):
    """An ordinary classifier (MLP 400-400 on split MNIST, 1000-1000 on permuted MNIST), Adam lr 1e-3,
    2000 iterations of 128, replay from the hypernetwork-protected VAE (decoder 250-350, beta 0.01)."""

    iterations: int | None = 2000
    lr: float = 1e-3
    distill_temperature: float = option(2.0, gt=0)
    # class-IL soft targets for the labels new in this task: probability 0 (van de Ven & Tolias' DGR+distill)
    # or logit 0 (the hypernetwork authors' script), see docs/hnet.md
    distill_pad: Literal["probability", "logit"] = "probability"


@register("hnet-r", "HNET+R: classifier trained with replay from a hypernetwork-protected VAE (soft targets)")
class HnetR(SequentialClassifier):
    Config = HnetRConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.replay = build_replay(self, self.config)
        self._previous: list[nn.Module] = []  # the classifier before the current task (not a submodule)
        self.register_buffer("task_masks", info.task_label_masks(), persistent=False)

    @classmethod
    def defaults(cls, info):
        out = replay_defaults(info, tir=False)
        if info.name.startswith("permuted"):
            out.update(hidden=(1000, 1000), lr=1e-4, iterations=5000)
        return out

    def trained_parameters(self):
        # The replay VAE and its hypernetwork are trained by their own optimiser after the task.
        return list(self.backbone.parameters()) + list(self.head.parameters())

    def before_task(self, task, ctx: Context) -> None:
        require_unit_interval(task.train, self.name)
        self._previous = []
        if ctx.task_index > 0:
            previous = nn.Sequential(copy.deepcopy(self.backbone), copy.deepcopy(self.head)).eval()
            for p in previous.parameters():
                p.requires_grad_(False)
            self._previous = [previous]

    def task_loss(self, logits, y, keep):
        loss = F.cross_entropy(masked_logits(logits, keep), y)
        return loss if not self._previous else (1 - self.config.replay_weight) * loss

    def extra_loss(self, batch, logits, task, ctx: Context):
        """Soft-target distillation on replayed inputs (Hinton et al. with T = 2, scaled by T^2)."""
        if not self._previous:
            return None
        cfg = self.config
        t = ctx.task_index
        x_r, t_r = self.replay.replay(cfg.batch_size, t, ctx.generator)
        with torch.no_grad():
            teacher = self._previous[0](x_r)
        student = self(x_r)
        if self.info.scenario == "class":
            # Teacher over the labels seen before this task, padded for the new ones with zero probability (van
            # de Ven & Tolias' DGR+distill) or zero logits (the authors' script); student over every label seen.
            old = label_mask(self.info.active_labels(t - 1), self.info.n_outputs, x_r.device).expand_as(student)
            new = label_mask(self.info.active_labels(t), self.info.n_outputs, x_r.device).expand_as(student)
            if cfg.distill_pad == "logit":
                teacher, old = teacher.masked_fill(new & ~old, 0.0), new
        else:  # task-IL: each replayed sample on its own task's head; domain-IL: the shared head
            old = new = self.task_masks[t_r]
        return cfg.replay_weight * masked_soft_target_loss(student, teacher, new, old, cfg.distill_temperature)

    def after_task(self, task, ctx: Context) -> None:
        self._previous = []
        train_replay(self, task, ctx)

    def storage(self) -> dict[str, Any]:
        out = {"classifier_bytes": module_bytes(self.backbone) + module_bytes(self.head)}
        out.update(replay_storage(self.replay))
        out["model_bytes"] = out["classifier_bytes"] + out["replay_bytes"]
        return out

    def __getstate__(self):
        state = super().__getstate__()
        state["_previous"] = []
        return state

