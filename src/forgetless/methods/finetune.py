"""Fine-tuning: plain sequential training, the lower bound every method is compared with."""

from __future__ import annotations

from .base import register
from .sequential import SequentialClassifier


@register("finetune", "plain sequential training of one network (lower bound)")
class Finetune(SequentialClassifier):
    """Trains the same network on each task in turn with nothing to protect old tasks."""
