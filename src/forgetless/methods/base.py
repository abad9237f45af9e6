"""The Method protocol and the method registry (what methods train with is in :mod:`forgetless.training`).

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

import copy
import dataclasses
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .. import config as cfg
from ..benchmarks.base import BenchmarkInfo, Task
from ..checkpoint import storable
from ..errors import ConfigError, choices
from ..metrics import module_bytes
from ..nn import backbones
from ..nn.taskwise import task_specific_norms
from ..training import Context, TrainConfig

BackboneFactory = Callable[[tuple[int, ...]], nn.Module]
IMPORT_PREFIX = "python:"  # --set backbone=python:package.module:factory


class ModuleCopy:
    """A backbone factory from a user's module instance: every call returns a deep copy (the user's object is
    never trained in place, and two methods built from it start from the same weights)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, input_shape: Sequence[int]) -> nn.Module:
        return copy.deepcopy(self.module)


def import_factory(spec: str) -> BackboneFactory:
    """The callable named by ``python:package.module:factory`` (importing the module runs its code: the user
    asked for it on their own command line; a checkpoint never causes an import, see checkpoint.py)."""
    path = spec[len(IMPORT_PREFIX):]
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"backbone={spec!r} is not an import path; valid: python:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises while importing
        raise ConfigError(f"backbone={spec!r}: cannot import {module_name!r} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"backbone={spec!r}: module {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ConfigError(f"backbone={spec!r}: {attr!r} is a {type(obj).__name__}, not a callable "
                          f"input_shape -> nn.Module")
    return obj


def call_factory(factory: BackboneFactory, shape: tuple[int, ...], what: str) -> nn.Module:
    """``factory(shape)``, which must be an ``nn.Module`` (a one-line ConfigError otherwise)."""
    try:
        net = factory(shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backbone {what} failed on input shape {shape}: {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"backbone {what} returned a {type(net).__name__}, not an nn.Module")
    return net


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
        further options of :func:`forgetless.nn.backbones.create` (e.g. ``task_bn``). A user's network takes
        ``task_bn`` only: its batch norms become task-specific (nothing is added to it); ``hidden``/``width``
        do not apply to it."""
        shape = self.info.input_shape
        name = getattr(self.config, "backbone", None) or self.info.default_backbone
        if self._backbone_factory is not None or name.startswith(IMPORT_PREFIX):
            if self._backbone_factory is not None:
                what = getattr(self._backbone_factory, "__name__", type(self._backbone_factory).__name__)
                net = call_factory(self._backbone_factory, shape, what)
            else:
                net = call_factory(import_factory(name), shape, repr(name))
            if extra.get("task_bn"):  # a user's network gets no new layers: its own batch norms become per task
                task_specific_norms(net, extra["task_bn"])
            return net
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

    @property
    def user_backbone(self) -> bool:
        """Whether the backbone is the user's own (a factory, a module, or a ``python:`` import path)."""
        name = getattr(self.config, "backbone", None) or ""
        return self._backbone_factory is not None or name.startswith(IMPORT_PREFIX)

    def __getstate__(self):
        # Checkpoints store the whole method (architectures may grow; see checkpoint.py). A user's backbone
        # factory that cannot be stored (a lambda) is dropped, and so is a module copy (a second copy of the
        # network): backbones are built in __init__, before any checkpoint.
        state = self.__dict__.copy()
        if isinstance(state["_backbone_factory"], ModuleCopy) or not storable(state["_backbone_factory"]):
            state["_backbone_factory"] = None
        return state


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

    ``backbone`` is a registered backbone name, ``python:package.module:factory``, the user's own factory
    ``input_shape -> nn.Module`` or an ``nn.Module`` (deep-copied); its feature width is read from
    ``out_features`` or measured with one dummy forward pass. Which methods take a user's network, and how,
    is in the README ("Your own model").
    """
    if isinstance(backbone, nn.Module):
        backbone = ModuleCopy(backbone)
    if isinstance(backbone, str) or backbone is None:
        if backbone is not None:
            overrides = {**overrides, "backbone": backbone}
        backbone = None
    elif not callable(backbone):
        raise ConfigError(f"backbone must be a name, an nn.Module or a callable input_shape -> nn.Module, "
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
