"""The Method protocol, the per-task training context and the method registry.

A method is a ``torch.nn.Module`` with three obligations::

    learn(task, ctx)            train on one task (it owns its loop: GAN steps, lookahead, rewiring...)
    predict(x, task_id=None)    logits over output labels (width >= the largest label seen so far + 1)
    storage()                   bytes kept: the model and what is kept per task (masks, embeddings, buffers)

and three optional ones the runner uses when present::

    infer_task(x)               predicted task index per sample (task-inference accuracy is reported)
    macs_per_sample(x, task_id) inference MACs for one sample (default: counted with FlopCounterMode)
    report()                    method-specific results (connections per task, generator sizes, ...)

``predict`` returns raw logits; the runner restricts the argmax to the labels the scenario allows
(the task's own labels in task-IL, every label seen so far in class-IL).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .. import config as cfg
from ..benchmarks.base import BenchmarkInfo, Split, Task
from ..errors import ConfigError, choices
from ..metrics import module_bytes
from ..nn import backbones

BackboneFactory = Callable[[tuple[int, ...]], nn.Module]


# ------------------------------------------------------------------------------------------ configs

@dataclass
class TrainConfig:
    """Options shared by every gradient-trained method. A method's own config subclasses this.

    The training budget is ``iterations`` (optimiser steps per task) when set, else ``epochs``.
    """

    backbone: str | None = None  # None: the benchmark's default backbone
    hidden: tuple[int, ...] = (400, 400)  # mlp hidden sizes
    width: int | None = None  # CNN base width (None: the architecture's own)
    pretrained: str | None = None  # torchvision-format weight file (resnet18/50, densenet121)
    epochs: int = 5
    iterations: int | None = None
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None

    def validate(self) -> None:
        if self.epochs < 1 and not self.iterations:
            raise ConfigError("epochs must be >= 1 (or set iterations)")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError("iterations must be >= 1")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 1 and lr > 0")


# ------------------------------------------------------------------------------------------ context

@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    step: int  # 0-based optimiser step within the task
    epoch: int  # 0-based
    index: int  # 0-based batch index within the epoch
    per_epoch: int  # batches in one epoch
    total: int  # steps in the whole task

    @property
    def last_in_epoch(self) -> bool:
        return self.index == self.per_epoch - 1


@dataclass
class Context:
    """What a method gets besides the task: device, randomness, logging and progress."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator = field(default_factory=torch.Generator)
    task_index: int = 0
    n_tasks: int = 1
    progress: bool = False
    out_dir: Path | None = None
    log_every: int = 50
    rank: int = 0
    world_size: int = 1
    _log_file: Any = None

    def log(self, **values: Any) -> None:
        """Append one record to log.jsonl (tensors are converted here, so call sites stay cheap)."""
        if self._log_file is None or self.rank != 0:
            return
        record = {"task": self.task_index, "time": round(time.time(), 3)}
        for k, v in values.items():
            record[k] = v.item() if isinstance(v, torch.Tensor) else v
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()

    def batches(self, split: Split, batch_size: int, epochs: int = 1, iterations: int | None = None,
                train: bool = True, desc: str = "train", drop_last: bool = False) -> Iterator[Batch]:
        """Shuffled mini-batches for ``iterations`` steps (cycling over epochs) or ``epochs`` passes.

        Batches are index slices of in-memory tensors, transformed (and augmented if ``train``) batch-wise.
        """
        n = len(split)
        if n == 0:
            return
        per_epoch = (n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size))
        per_epoch = max(1, math.ceil(per_epoch / self.world_size))
        total = iterations if iterations else epochs * per_epoch
        bar = self.bar(total, f"task {self.task_index + 1}/{self.n_tasks} {desc}")
        step = 0
        epoch = 0
        while step < total:
            order = torch.randperm(n, generator=self.generator)[self.rank :: self.world_size].to(split.device)
            for index in range(per_epoch):
                idx = order[index * batch_size : (index + 1) * batch_size]
                if len(idx) == 0:
                    break
                x, y = split.batch(idx, train, self.generator)
                yield Batch(x, y, step, epoch, index, per_epoch, total)
                step += 1
                if bar is not None:
                    bar.update(1)
                if step >= total:
                    break
            epoch += 1
        if bar is not None:
            bar.close()

    def bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


# ------------------------------------------------------------------------------------------- method

class Method(nn.Module):
    """Base class: holds the benchmark info and the resolved config; builds backbones."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = TrainConfig
    # Scenarios the method supports (the runner refuses others with a clear error).
    scenarios: ClassVar[tuple[str, ...]] = ("task", "domain", "class")

    def __init__(self, info: BenchmarkInfo, config: Any = None, backbone: BackboneFactory | None = None) -> None:
        super().__init__()
        self.info = info
        self.config = config if config is not None else self.Config()
        self._backbone_factory = backbone

    @classmethod
    def defaults(cls, info: BenchmarkInfo) -> dict[str, Any]:
        """Config defaults that depend on the benchmark or scenario (e.g. per-scenario lambdas)."""
        return {}

    # --- required
    def learn(self, task: Task, ctx: Context) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement learn()")

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement predict()")

    def storage(self) -> dict[str, Any]:
        return {"model_bytes": module_bytes(self)}

    # --- helpers for subclasses
    def make_backbone(self, **extra: Any) -> nn.Module:
        """The user's backbone if one was given, else the configured/benchmark-default one; ``extra`` are
        further options of :func:`forgetless.nn.backbones.create` (e.g. ``task_bn``)."""
        shape = self.info.input_shape
        if self._backbone_factory is not None:
            return self._backbone_factory(shape)
        name = getattr(self.config, "backbone", None) or self.info.default_backbone
        options: dict[str, Any] = dict(extra)
        # hidden/width are shared config defaults: passed to the backbones that take them; pretrained always
        # (a backbone that cannot load weights is then an error, not silently random).
        takes = backbones.options(name)
        if getattr(self.config, "hidden", None) is not None and "hidden" in takes:
            options["hidden"] = tuple(self.config.hidden)
        if getattr(self.config, "width", None) is not None and "width" in takes:
            options["width"] = self.config.width
        if getattr(self.config, "pretrained", None) is not None:
            options["pretrained"] = self.config.pretrained
        return backbones.create(name, shape, **options)

    def __getstate__(self):
        # Checkpoints pickle the whole method (architectures may grow). A user's backbone factory that
        # cannot be pickled (a lambda) is dropped: backbones are built in __init__, before any checkpoint.
        state = self.__dict__.copy()
        try:
            pickle.dumps(state["_backbone_factory"])
        except Exception:
            state["_backbone_factory"] = None
        return state


def make_optimizer(params, config: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = config.lr if lr is None else lr
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


def label_mask(labels, n_outputs: int, device=None) -> torch.Tensor:
    """Boolean vector over outputs, True at ``labels``."""
    keep = torch.zeros(n_outputs, dtype=torch.bool, device=device)
    keep[torch.as_tensor(list(labels), dtype=torch.long, device=device)] = True
    return keep


def masked_logits(logits: torch.Tensor, keep: torch.Tensor | list[int]) -> torch.Tensor:
    """Logits with outputs outside ``keep`` set to -inf (cross-entropy and argmax then ignore them).

    ``keep`` is a list of labels, a boolean vector over outputs, or a boolean matrix (one row per sample).
    """
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool:
        keep = label_mask(keep, logits.shape[1], logits.device)
    return logits.masked_fill(~keep, float("-inf"))


# ----------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type[Method]
    description: str


METHODS: dict[str, MethodSpec] = {}


def register(name: str, description: str = ""):
    """Class decorator: make a Method subclass available as ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise RuntimeError(f"method {name!r} registered twice")
        cls.name = name
        doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
        METHODS[name] = MethodSpec(name, cls, doc)
        return cls

    return wrap


def resolve_config(name: str, info: BenchmarkInfo, overrides: dict[str, Any] | None = None):
    """The method's config: dataclass defaults < benchmark/scenario defaults < ``overrides``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid: {choices(METHODS)}")
    cls = METHODS[name].cls
    merged = {**cls.defaults(info), **(overrides or {})}
    return cfg.build(cls.Config, merged, what="--set key", owner=name)


def create(name: str, info: BenchmarkInfo, backbone: str | BackboneFactory | None = None, **overrides: Any) -> Method:
    """Create method ``name`` for a benchmark; ``overrides`` are hyperparameters (strings are parsed).

    ``backbone`` is a registered backbone name or the user's own factory ``input_shape -> nn.Module``
    (its feature width is read from ``out_features`` or measured with one dummy forward pass).
    """
    if isinstance(backbone, str) or backbone is None:
        if backbone is not None:
            overrides = {**overrides, "backbone": backbone}
        backbone = None
    elif not callable(backbone):
        raise ConfigError(f"backbone must be a name or a callable input_shape -> nn.Module, "
                          f"got {type(backbone).__name__}")
    config = resolve_config(name, info, overrides)
    cls = METHODS[name].cls
    if info.scenario not in cls.scenarios:
        raise ConfigError(f"method {name!r} does not support the {info.scenario} scenario; valid: "
                          f"{choices(cls.scenarios)}")
    return cls(info, config, backbone=backbone)


def config_dict(method: Method) -> dict[str, Any]:
    return cfg.to_dict(method.config) if dataclasses.is_dataclass(method.config) else dict(method.config or {})


def default_config_dict(method: Method) -> dict[str, Any]:
    """The method's configuration class at its own defaults (no benchmark defaults, no overrides), as
    :func:`config_dict` writes it; empty when the configuration is not a dataclass."""
    if not dataclasses.is_dataclass(method.config):
        return {}
    return cfg.to_dict(type(method.config)())
