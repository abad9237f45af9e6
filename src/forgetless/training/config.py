"""``TrainConfig``: the options every gradient-trained method shares (a method's own config subclasses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass
class TrainConfig:
    """Options shared by every gradient-trained method. A method's own config subclasses this.

    The training budget is ``iterations`` (optimiser steps per task) when set, else ``epochs``.
    """

    backbone: str | None = None  # None: the benchmark's default backbone
    hidden: tuple[int, ...] = (400, 400)  # mlp hidden sizes
    width: int | None = None  # CNN base width (None: the architecture's own)
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
