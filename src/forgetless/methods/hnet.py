"""Task-conditioned hypernetworks (von Oswald et al., ICLR 2020): ``hnet`` (HNET, and HNET+ENT outside task-IL).

A hypernetwork maps a learned task embedding (plus learned chunk embeddings, when chunked) to every weight
of the target classifier, which runs with those weights through ``functional_call``. Each task trains the
hypernetwork and its own embedding on the task loss plus the output regularizer of Eq. 2 (frozen targets
for the stored embeddings, one-step Adam lookahead); then the embedding is stored and frozen.

Task-IL (CL1): the given task id picks the embedding. Domain-IL (CL2) and class-IL (CL3): the task is
inferred as the embedding whose model gives the lowest predictive entropy on the input (HNET+ENT, Sec. 2.3),
and that model's output head answers. ``infer_task`` reports the inferred task.

Training uses the task's own output units (one head per task, or the shared head in domain-IL), as the authors'
HNET+ENT does in class-IL (``--infer_task_id --infer_with_entropy`` sets ``infer_output_head``);
``train_units=seen`` instead trains each task's softmax over the units of every task seen so far (their growing
CL3 head, which their code never combines with entropy inference). The target network has one output per label
of the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import option
from ..distributed import all_reduce_gradients, optimizer_params
from ..errors import ConfigError
from ..metrics import tensor_bytes
from ..nn import backbones
from ..nn.backbones import feature_width
from ..nn.hnet import HyperNetwork, OutputRegularizer, TargetNetwork
from ..nn.hnet import build as build_hnet
from ..nn.hnet.hypernetwork import activation
from ..training import Context, TrainConfig, config_optimizer
from ..training.task_inference import chosen_outputs, grouped_forward, lowest_entropy
from .base import Method, register

# Appendix C of the paper, per benchmark (the dataclass defaults are the split MNIST ones).
PERMUTED_DEFAULTS: dict[str, Any] = dict(hidden=(1000, 1000), hnet_hidden=(25, 25), hnet_activation="elu",
                                         chunk_size=78000, emb_dim=24, chunk_emb_dim=8, beta=0.01, lr=1e-4,
                                         iterations=5000)
TOY_DEFAULTS: dict[str, Any] = dict(hidden=(10, 10), target_activation="sigmoid", hnet_hidden=(10, 10),
                                    hnet_activation="sigmoid", chunk_size=None, emb_dim=2, beta=0.005, lr=0.01,
                                    iterations=4000, batch_size=32)
CIFAR_DEFAULTS: dict[str, Any] = dict(backbone="resnet32", hnet_hidden=(), chunk_size=7000, emb_dim=32,
                                      chunk_emb_dim=32, beta=0.01, lr=1e-3, batch_size=32, epochs=200,
                                      iterations=None)


@dataclass
class HnetConfig(TrainConfig):
    """Defaults: split MNIST, Appendix C (target MLP 400-400; chunked hypernetwork 10-10, chunks of 42,000
    weights, task and chunk embeddings of 96; beta 0.01; Adam lr 1e-3; 2000 iterations of 128). The
    hypernetwork's activation is ReLU as in the authors' split MNIST script (see docs/hnet.md)."""

    iterations: int | None = 2000
    lr: float = 1e-3
    target_activation: str = "relu"  # nonlinearity of an mlp target (the toy regression uses sigmoid)
    hnet_hidden: tuple[int, ...] = option((10, 10), ge=1, source="Appendix C")
    hnet_activation: str = "relu"
    chunk_size: int | None = option(42000, ge=0, source="Appendix C")  # None or 0: a full (unchunked) hypernetwork
    emb_dim: int = option(96, ge=1, source="Appendix C")
    chunk_emb_dim: int = option(96, ge=1, source="Appendix C")
    emb_std: float = 1.0  # task embeddings ~ N(0, emb_std^2) (authors' code)
    chunk_emb_std: float = 1.0
    emb_lr: float | None = option(None, gt=0)  # learning rate of the task embedding (None: lr)
    beta: float = option(0.01, ge=0, source="Appendix C")
    lookahead: bool = True  # evaluate the regularizer at Theta + dTheta (Eq. 2); False: at Theta
    # stochastic regularizer: at most K random past tasks per step (Appendix D)
    reg_tasks: int | None = option(None, ge=1)
    # softmax temperature of the entropy used for task inference (HNET+ENT)
    temperature: float = option(1.0, gt=0)
    # softmax of the task loss over the task's "own" units (the authors' HNET+ENT) or over the units of every
    # task "seen" so far (their growing CL3 head); with "seen" the inferred model answers over all seen units.
    # The entropy of HNET+ENT is over the task's own units either way (docs/hnet.md, ambiguity 4).
    train_units: Literal["own", "seen"] = "own"

    def validate(self) -> None:
        super().validate()
        activation(self.hnet_activation)
        if self.target_activation not in backbones.ACTIVATIONS:
            raise ConfigError(f"target_activation={self.target_activation!r} is not valid; valid: "
                              f"{', '.join(sorted(backbones.ACTIVATIONS))}")


def hnet_defaults(info) -> dict[str, Any]:
    """Appendix C defaults for the benchmark (split MNIST's are the dataclass defaults)."""
    if info.kind == "regression":
        return dict(TOY_DEFAULTS)
    if info.name.startswith("permuted"):
        return dict(PERMUTED_DEFAULTS)
    if info.name.startswith("cifar10-100"):
        return dict(CIFAR_DEFAULTS)
    return {}


def make_target(method: Method, n_outputs: int) -> nn.Module:
    """The target network: the configured backbone and one linear layer over ``n_outputs``."""
    cfg = method.config
    if method._backbone_factory is None and (cfg.backbone or method.info.default_backbone) == "mlp":
        body = backbones.create("mlp", method.info.input_shape, hidden=tuple(cfg.hidden),
                                activation=cfg.target_activation)
    else:
        body = method.make_backbone()
    return nn.Sequential(body, nn.Linear(feature_width(body, method.info.input_shape), n_outputs))


class HnetClassifier(Method):
    """A target network whose weights a task-conditioned hypernetwork generates, protected by Eq. 2.

    The base of ``hnet`` (and of ``hnet-tir``, which only changes how the task is inferred).
    """

    Config = HnetConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        cfg = self.config
        self.target = TargetNetwork(make_target(self, info.n_outputs))
        self.hnet: HyperNetwork = build_hnet(self.target.n_weights, cfg.emb_dim, cfg.hnet_hidden, cfg.chunk_size,
                                             cfg.chunk_emb_dim, cfg.hnet_activation, cfg.emb_std, cfg.chunk_emb_std)
        self.regularizer = OutputRegularizer(cfg.beta, cfg.lookahead, cfg.reg_tasks)
        self.register_buffer("task_masks", info.task_label_masks(), persistent=False)
        self._eval_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def defaults(cls, info):
        return hnet_defaults(info)

    @property
    def tasks_learned(self) -> int:
        return self.hnet.n_tasks

    # ---------------------------------------------------------------------------------------- training
    def learn(self, task, ctx: Context) -> None:
        self._eval_cache = None
        self.train()
        t = self.hnet.n_tasks
        self.before_task(task, ctx)
        self.learn_classifier(task, ctx, t)
        self.after_task(task, ctx)

    def before_task(self, task, ctx: Context) -> None:
        """Hook for subclasses (e.g. train a task-inference network first)."""

    def after_task(self, task, ctx: Context) -> None:
        """Hook for subclasses (e.g. train a replay model on the task)."""

    def learn_classifier(self, task, ctx: Context, t: int) -> None:
        """Train the hypernetwork and embedding ``t`` on ``task`` with the output regularizer of Eq. 2."""
        cfg = self.config
        session = self.start_task(t, ctx.generator)
        for batch in ctx.batches(task.train, cfg.batch_size, epochs=cfg.epochs, iterations=cfg.iterations):
            loss, reg = self.train_step(session, batch.x, batch.y, ctx.generator, batch.share)
            if ctx.should_log(batch):
                ctx.log(step=batch.step, epoch=batch.epoch, loss=loss, regularizer=reg)
        self.finish_task(session)

    def start_task(self, t: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """New embedding for task ``t``, frozen regularizer targets for tasks < t, fresh optimisers."""
        cfg = self.config
        emb = self.hnet.add_embedding(generator)
        self.regularizer.begin_task(self.hnet, range(t))
        theta = self.hnet.theta()
        keep = self.task_masks[: t + 1].any(0) if cfg.train_units == "seen" else self.task_masks[t]
        return {"t": t, "emb": emb, "theta": theta, "keep": keep,
                "opt_theta": config_optimizer(theta, cfg, cfg.lr, fused=True),
                "opt_emb": config_optimizer([emb], cfg, cfg.emb_lr or cfg.lr, fused=True)}

    def train_step(self, session: dict[str, Any], x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None,
                   share: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step: task loss through the generated weights, then Eq. 2's gradient at the lookahead, then
        the optimisers (hypernetwork and current embedding). ``share``: this rank's fraction of the global
        batch when data-parallel (the task gradient is all-reduced before the lookahead reads it)."""
        opt_theta, opt_emb = session["opt_theta"], session["opt_emb"]
        out = self.target(x, self.hnet(session["emb"], truncate=False))
        loss = self.task_loss(out, y, session["keep"])
        opt_theta.zero_grad(set_to_none=True)
        opt_emb.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(optimizer_params(opt_theta, opt_emb), share)
        reg = self.regularizer.backward(self.hnet, opt_theta, generator)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(session["theta"], self.config.grad_clip)
        opt_theta.step()
        opt_emb.step()
        return loss.detach(), reg

    def finish_task(self, session: dict[str, Any]) -> None:
        """Store the embedding (frozen) and the batch-norm statistics of the task."""
        self.regularizer.end_task()
        self.hnet.freeze_embeddings()
        self.target.checkpoint_buffers(session["t"])

    def task_loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if self.info.kind == "regression":
            return F.mse_loss(out, y)
        return F.cross_entropy(out.masked_fill(~keep, float("-inf")), y)

    # --------------------------------------------------------------------------------------- inference
    def task_outputs(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The target network's outputs on ``x`` with the weights generated for task ``t``."""
        return self.target(x, self.hnet(self.hnet.embeddings[t], truncate=False), task=t)

    def all_task_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, outputs]: the model of every stored embedding on ``x`` (weights from one batched pass)."""
        weights = self.hnet(self.hnet.embedding_matrix(), truncate=False)
        return torch.stack([self.target(x, weights[t], task=t) for t in range(self.hnet.n_tasks)])

    def choose_tasks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """HNET+ENT: the task whose model is the least uncertain on each input (and every model's outputs)."""
        outputs = self.all_task_outputs(x)
        return lowest_entropy(outputs, self.task_masks, self.config.temperature), outputs

    def _inferred(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen task per sample, outputs of the chosen models with other tasks' units at -inf).

        The runner calls ``predict`` then ``infer_task`` on the same batch; the result is kept for that
        batch only (and dropped from checkpoints)."""
        cache = self._eval_cache
        if cache is not None and cache[0] is x:
            return cache[1], cache[2]
        chosen, outputs = self.choose_tasks(x)
        picked = grouped_forward(x, chosen, self.task_outputs) if outputs is None else chosen_outputs(outputs, chosen)
        if self.config.train_units == "seen":  # the inferred model answers over every seen unit
            answer = self.task_masks[: self.hnet.n_tasks].any(0).expand_as(picked)
        else:
            answer = self.task_masks[chosen]
        picked = picked.masked_fill(~answer, float("-inf"))
        self._eval_cache = (x, chosen, picked)
        return chosen, picked

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if task_id is not None:
            return self.task_outputs(x, task_id)
        return self._inferred(x)[1]

    @torch.no_grad()
    def infer_task(self, x: torch.Tensor) -> torch.Tensor:
        chosen = self._inferred(x)[0]
        self._eval_cache = None
        return chosen

    # ---------------------------------------------------------------------------------------- reports
    def hnet_counts(self) -> dict[str, Any]:
        theta = self.hnet.n_theta()
        embs = self.hnet.n_tasks * self.hnet.emb_dim
        return {
            "target_weights": self.target.n_weights, "hnet_weights": theta, "task_embedding_weights": embs,
            "n_chunks": self.hnet.n_chunks, "chunk_size": self.hnet.chunk_size,
            # trainable hypernetwork parameters (with the task embeddings, as the paper counts them) / target
            "compression_ratio": (theta + embs) / self.target.n_weights,
        }

    def storage(self) -> dict[str, Any]:
        counts = self.hnet_counts()
        theta_bytes = tensor_bytes(self.hnet.theta())
        emb_bytes = tensor_bytes(list(self.hnet.embeddings))
        bn_bytes = self.target.buffer_bytes()
        return {
            "model_bytes": theta_bytes + emb_bytes + bn_bytes,
            "hnet_bytes": theta_bytes,
            "per_task_bytes": (emb_bytes + bn_bytes) / max(self.hnet.n_tasks, 1),
            "task_embedding_bytes": emb_bytes,
            "batchnorm_stats_bytes": bn_bytes,
            "compression_ratio": counts["compression_ratio"],
        }

    def report(self) -> dict[str, Any]:
        return self.hnet_counts()

    def __getstate__(self):
        state = super().__getstate__()
        state["_eval_cache"] = None
        return state


@register("hnet", "task-conditioned hypernetwork (von Oswald et al., 2020); entropy task inference outside task-IL")
class HNET(HnetClassifier):
    """HNET in task-IL; HNET+ENT (lowest predictive entropy picks the embedding) in domain- and class-IL."""
