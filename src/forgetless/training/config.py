"""``TrainConfig``: the options every gradient-trained method shares (a method's own config subclasses it).

Ranges are declared on the fields (:func:`forgetless.config.option`) and checked when a config is built;
``validate`` holds only what relates fields to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import option
from ..errors import ConfigError


@dataclass
class TrainConfig:
    """Options shared by every gradient-trained method. A method's own config subclasses this.

    The training budget is ``iterations`` (optimiser steps per task) when set, else ``epochs``.
    """

    backbone: str | None = None  # None: the benchmark's default backbone
    hidden: tuple[int, ...] = option((400, 400), ge=1)  # mlp hidden sizes
    width: int | None = option(None, ge=1)  # CNN base width (None: the architecture's own)
    pretrained: str | None = None  # torchvision-format weight file (resnet18/50, densenet121)
    epochs: int = option(5, ge=0)
    iterations: int | None = option(None, ge=1)
    batch_size: int = option(128, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = option(1e-3, gt=0)
    momentum: float = option(0.9, ge=0, lt=1)
    weight_decay: float = option(0.0, ge=0)
    grad_clip: float | None = option(None, gt=0)

    def validate(self) -> None:
        if self.epochs < 1 and not self.iterations:
            raise ConfigError("epochs must be >= 1 (or set iterations)")
