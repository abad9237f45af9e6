"""Continual-learning methods: ``create(name, benchmark_info, backbone=None, **config) -> Method``.

Each module registers its methods with ``@register``; every module of this package is imported here,
so adding a method is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    METHODS,
    Batch,
    Context,
    Method,
    TrainConfig,
    create,
    label_mask,
    make_optimizer,
    masked_logits,
    register,
    resolve_config,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS", "Batch", "Context", "Method", "TrainConfig", "create", "label_mask", "make_optimizer",
    "masked_logits", "register", "resolve_config",
]
