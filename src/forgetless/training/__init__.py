"""What methods share to train: the per-task :class:`Context` and its batch iterator, :class:`TrainConfig`,
the optimiser factory and schedule, the fit loop, label masks, penalties, distillation, model selection
and task inference. Nothing here imports :mod:`forgetless.methods`."""

from .config import TrainConfig
from .context import Batch, Context
from .fit import fit
from .labels import label_mask, masked_logits
from .optim import config_optimizer, make_optimizer, step_decay

__all__ = ["Batch", "Context", "TrainConfig", "config_optimizer", "fit", "label_mask", "make_optimizer",
           "masked_logits", "step_decay"]
