"""Adding tasks to a pretrained network: the shared base of Piggyback, the affine weight transformations,
PackNet and the two references of Mancini et al. (2018), Tables 1-2 (classifier-only, individual networks).

Task 1 is the pretraining task. Every transfer method trains the backbone and task 1's head on it with the
same routine (:meth:`TransferMethod.pretrain`), the same ``pretrain_*`` options and, through the runner's
per-task seed, the same random numbers; the backbone is built first in every method's constructor. So
all of them start the new tasks from the *same* pretrained baseline, bit for bit (tested), without a
shared file on disk and without a second copy of the pretraining in the benchmark. Later tasks are
learned by :meth:`TransferMethod.learn_task`, one head per task (task-IL only: a new task's network is
selected by its id).

Storage follows the paper's "# Params" row: every parameter kept over all tasks, excluding the classifiers,
relative to the baseline network's parameters, counting 1 bit per binary-mask entry and 32 bits per real
number (:func:`parameter_ratio`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..benchmarks.base import Task
from ..config import option
from ..errors import ConfigError, ForgetlessError
from ..metrics import module_bytes
from ..nn.backbones import feature_width
from ..nn.heads import MultiHead
from ..nn.masks import TaskWeights
from ..nn.norm_statistics import freeze_norm_statistics
from ..nn.taskwise import select_task, task_norms
from ..training import Batch, Context, TrainConfig, fit, make_optimizer
from .base import Method, register


@dataclass
class TransferConfig(TrainConfig):
    """Defaults: Mancini et al. (2018), Sec. 4 (ImageNet-to-Sketch protocol of Piggyback): batch 32, Adam
    1e-4 for the task-specific parameters, SGD with momentum 0.9 and lr 1e-3 for the classifier, both
    divided by 10 half-way (after 15 of 30 epochs).

    The ``pretrain_*`` options and ``norm`` define the shared pretrained baseline; keep them equal across
    the methods you compare.
    """

    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-4
    classifier_lr: float = option(1e-3, gt=0, source="Sec. 4")
    classifier_optimizer: Literal["sgd", "adam"] = "sgd"
    # fractions of a task's budget where both lrs are divided by 10
    decay_at: tuple[float, ...] = option((0.5,), gt=0, lt=1, source="Sec. 4")
    decay_factor: float = 0.1
    norm: bool = True  # backbone with batch norm after every layer, one slot per task (slot 0: pretrained)
    pretrain_epochs: int = 10
    pretrain_iterations: int | None = None
    pretrain_batch_size: int = 128
    pretrain_lr: float = option(0.01, gt=0)  # SGD, momentum 0.9
    pretrain_decay_at: tuple[float, ...] = option((0.5,), gt=0, lt=1)

    def validate(self) -> None:
        super().validate()
        if self.pretrain_epochs < 1 and not self.pretrain_iterations:
            raise ConfigError("pretrain_epochs must be >= 1 (or set pretrain_iterations)")


# -------------------------------------------------------------------------------------------- storage

def parameter_ratio(baseline: int, per_task_bits: Sequence[int], per_task_reals: Sequence[int]) -> float:
    """The paper's "# Params": (baseline + sum over tasks of bits/32 + real numbers) / baseline."""
    if baseline <= 0:
        raise ValueError("the baseline network has no parameters")
    return (baseline + sum(per_task_bits) / 32.0 + sum(per_task_reals)) / baseline


def baseline_parameters(backbone: nn.Module) -> int:
    """Parameters of the plain (pretrained) network: a task batch norm counts with one slot only, the
    per-task state of masked layers not at all."""
    total = 0
    skip = set()
    for norm in task_norms(backbone):
        for slot in list(norm.norms)[1:]:
            skip.update(id(p) for p in slot.parameters())
    for m in backbone.modules():
        if isinstance(m, TaskWeights):
            skip.update(id(p) for p in m.parameters())
    for p in backbone.parameters():
        if id(p) not in skip:
            total += p.numel()
    return total


def norm_reals_per_task(backbone: nn.Module) -> int:
    """Real numbers of one task's batch-norm slot: scale, bias, running mean and variance (Mancini et al.)."""
    return sum(4 * norm.num_features for norm in task_norms(backbone))


# --------------------------------------------------------------------------------------------- method

class TransferMethod(Method):
    """Pretrained backbone (task 1) + one head per task; subclasses implement :meth:`learn_task`."""

    Config: ClassVar[type] = TransferConfig
    scenarios: ClassVar[tuple[str, ...]] = ("task",)
    task_norm: ClassVar[bool] = False  # new tasks get their own batch-norm slot (else slot 0, frozen)

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        # The backbone is the first thing built (and the heads next), so every transfer method draws the
        # same initial weights from the runner's seed: the pretrained baseline is shared exactly.
        self.backbone = self.make_backbone(task_bn=info.n_tasks if self.config.norm else None)
        self.heads = MultiHead(feature_width(self.backbone, info.input_shape), info.task_labels, info.n_outputs)
        self.tasks_learned = 0
        self.baseline_params = baseline_parameters(self.backbone)

    # ------------------------------------------------------------------------------------- selection
    def uses_task_norm(self) -> bool:
        return bool(getattr(self.config, "task_bn", self.task_norm))

    def network(self, task_id: int) -> nn.Module:
        """The feature extractor of task ``task_id`` (one shared backbone unless a method copies it)."""
        return self.backbone

    def select(self, task_id: int) -> nn.Module:
        net = self.network(task_id)
        select_task(net, task_id, norm=task_id if self.uses_task_norm() else 0)
        return net

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if task_id is None:
            raise ForgetlessError(f"{self.name} needs the task id at test time (task-incremental only)")
        net = self.select(task_id)
        return self.heads(net(x), task_id)

    # -------------------------------------------------------------------------------------- learning
    def learn(self, task: Task, ctx: Context) -> None:
        if self.tasks_learned == 0:
            self.pretrain(task, ctx)
            self.after_pretrain(task, ctx)
        else:
            self.learn_task(task, ctx)
        self.tasks_learned += 1

    def task_loss(self, net: nn.Module, batch: Batch, task_id: int) -> torch.Tensor:
        logits = self.heads.heads[task_id](net(batch.x))
        return F.cross_entropy(logits, self.heads_target(batch.y, task_id))

    def heads_target(self, y: torch.Tensor, task_id: int) -> torch.Tensor:
        """Global labels -> positions within the task's head (labels of a task are consecutive)."""
        return y - self.info.task_labels[task_id][0]

    def pretrain(self, task: Task, ctx: Context) -> None:
        """Train backbone and head 1 on the first task: the pretrained baseline, identical in every
        transfer method (SGD with momentum 0.9, ``pretrain_lr`` divided by 10 at ``pretrain_decay_at``). With
        ``pretrained=PATH`` the backbone is the loaded network and only head 1 is trained."""
        cfg = self.config
        net = self.select(0)
        net.train()
        params = list(net.parameters()) + list(self.heads.heads[0].parameters())
        if getattr(cfg, "pretrained", None):
            # The loaded weights are the pretrained network (ImageNet in the paper's protocol), not a starting
            # point: only task 1's classifier is learned (torchvision's own classifier keys are not loaded),
            # with the backbone and its batch-norm statistics as they came.
            freeze_norm_statistics(net)
            params = list(self.heads.heads[0].parameters())
        optimizer = make_optimizer(params, "sgd", cfg.pretrain_lr, cfg.momentum, cfg.weight_decay, fused=True)
        fit(ctx, ctx.batches(task.train, cfg.pretrain_batch_size, epochs=cfg.pretrain_epochs,
                             iterations=cfg.pretrain_iterations, desc="pretrain"),
            [optimizer], lambda b: self.task_loss(net, b, 0), cfg.pretrain_decay_at, 0.1, grad_clip=cfg.grad_clip,
            phase="pretrain")

    def after_pretrain(self, task: Task, ctx: Context) -> None:
        """Hook after the pretraining (PackNet prunes here)."""

    def learn_task(self, task: Task, ctx: Context) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_task(self, task: Task, ctx: Context, net: nn.Module, params: Iterable[nn.Parameter], *,
                   train_norm: bool, optimizer: str | None = None, lr: float | None = None,
                   epochs: int | None = None, iterations: int | None = None,
                   decay_at: Sequence[float] | None = None, weight_decay: float | None = None,
                   before_step: Callable[[Batch], None] | None = None, desc: str = "train") -> None:
        """Train ``params`` (with ``optimizer``/``lr``, default the config's) and the task's head
        (``classifier_optimizer``, ``classifier_lr``) on ``task``. With ``train_norm`` False every batch norm
        stays in eval mode."""
        cfg = self.config
        t = task.id
        net.train()
        if not train_norm:
            freeze_norm_statistics(net)
        body = make_optimizer(params, optimizer or cfg.optimizer, cfg.lr if lr is None else lr, cfg.momentum,
                                cfg.weight_decay if weight_decay is None else weight_decay, fused=True)
        head = make_optimizer(self.heads.heads[t].parameters(), cfg.classifier_optimizer, cfg.classifier_lr,
                                cfg.momentum, cfg.weight_decay, fused=True)
        if epochs is None and iterations is None:
            epochs, iterations = cfg.epochs, cfg.iterations
        fit(ctx, ctx.batches(task.train, cfg.batch_size, epochs=epochs or 1, iterations=iterations, desc=desc),
            [body, head], lambda b: self.task_loss(net, b, t), cfg.decay_at if decay_at is None else decay_at,
            cfg.decay_factor, before_step=before_step, grad_clip=cfg.grad_clip, phase=desc)

    def start_task_norm(self, task_id: int) -> list[nn.Parameter]:
        """Give ``task_id`` its own batch norm, started from the pretrained one; returns its parameters."""
        params: list[nn.Parameter] = []
        for norm in task_norms(self.backbone):
            norm.copy_slot(0, task_id)
            params += list(norm.norms[task_id].parameters())
        return params

    # ----------------------------------------------------------------------------------------- storage
    def task_storage(self) -> tuple[list[int], list[int]]:
        """(bits, real numbers) kept for each task after the first, classifiers excluded."""
        return [0] * (self.tasks_learned - 1), [0] * (self.tasks_learned - 1)

    def storage(self) -> dict[str, Any]:
        bits, reals = self.task_storage()
        return {
            "model_bytes": module_bytes(self),
            "baseline_params": self.baseline_params,
            "mask_bits": sum(bits),
            "task_real_params": sum(reals),
            "params_ratio": parameter_ratio(self.baseline_params, bits, reals),
        }


# ----------------------------------------------------------------------------------------- references

@dataclass
class ClassifierOnlyConfig(TransferConfig):
    decay_at: tuple[float, ...] = ()  # Piggyback's baseline script: decay every 30 of 30 epochs, i.e. never


@register("classifier-only", "frozen pretrained feature extractor, a new classifier per task (reference)")
class ClassifierOnly(TransferMethod):
    """The pretrained backbone as a fixed feature extractor; only a head per task is trained (SGD,
    ``classifier_lr``). Batch norm stays the pretrained one."""

    Config = ClassifierOnlyConfig

    def learn_task(self, task: Task, ctx: Context) -> None:
        net = self.select(task.id)
        self.train_task(task, ctx, net, [], train_norm=False)


@dataclass
class IndividualConfig(TransferConfig):
    optimizer: Literal["sgd", "adam"] = "sgd"  # Piggyback's baseline script: SGD, lr 1e-3, momentum 0.9
    lr: float = 1e-3


@register("individual", "a separately fine-tuned copy of the pretrained network per task (reference)")
class Individual(TransferMethod):
    """Each new task fine-tunes its own copy of the pretrained network (batch norm included): the upper
    reference, at the price of a whole network per task."""

    Config = IndividualConfig

    def __init__(self, info, config=None, backbone=None) -> None:
        super().__init__(info, config, backbone)
        self.copies = nn.ModuleDict()

    def network(self, task_id: int) -> nn.Module:
        key = str(task_id)
        return self.copies[key] if key in self.copies else self.backbone  # noqa: SIM401 (ModuleDict has no get)

    def select(self, task_id: int) -> nn.Module:
        net = self.network(task_id)
        select_task(net, 0)  # a copy uses its own slot-0 batch norm
        return net

    def learn_task(self, task: Task, ctx: Context) -> None:
        net = copy.deepcopy(self.backbone)
        self.copies[str(task.id)] = net
        select_task(net, 0)
        self.train_task(task, ctx, net, net.parameters(), train_norm=True)

    def task_storage(self) -> tuple[list[int], list[int]]:
        n = self.tasks_learned - 1
        return [0] * n, [self.baseline_params] * n


def n_bits(values: int) -> int:
    """Bits needed to store one of ``values`` distinct values."""
    return max(1, math.ceil(math.log2(values)))
