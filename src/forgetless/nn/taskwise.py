"""Modules whose behaviour depends on the current task, and task-specific batch normalisation.

A network built from ordinary layers cannot take a task id in ``forward`` without changing every
backbone's signature, so task-conditioned modules (per-task batch norm here, masked layers in
:mod:`forgetless.nn.masks`) read the task from an attribute instead. :func:`select_task` sets it on every
such module of a network before a forward pass::

    select_task(backbone, 3)            # masks, gates and batch norm of task 3
    select_task(backbone, 3, norm=0)    # task 3's masks with the batch norm of task 0 (shared, frozen)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .surgery import qualified_names, replace_layers

_SAME = object()


class TaskConditioned:
    """Marker for modules that read the current task from ``self.task`` (``None``: the plain network)."""

    task: int | None = None


def select_task(module: nn.Module, task: int | None, norm: int | object | None = _SAME) -> None:
    """Set ``task`` on every task-conditioned submodule; ``norm`` (default: ``task``) picks the batch-norm slot."""
    norm_task = task if norm is _SAME else norm
    for m in module.modules():
        if isinstance(m, TaskBatchNorm):
            m.task = norm_task
        elif isinstance(m, TaskConditioned):
            m.task = task


class TaskBatchNorm(TaskConditioned, nn.Module):
    """Batch normalisation with its own scale, bias and running statistics for each task.

    Slot ``task`` is used (slot 0 when ``task`` is None). Only the active slot's running statistics move
    in training mode, so the other tasks' normalisation is untouched. ``dims`` is 1 (features) or 2 (maps).
    """

    def __init__(self, num_features: int, n_tasks: int, dims: int = 2, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"TaskBatchNorm needs n_tasks >= 1, got {n_tasks}")
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.norms = nn.ModuleList(norm(num_features, eps=eps, momentum=momentum) for _ in range(n_tasks))
        self.num_features = num_features
        self.task = 0

    @property
    def n_tasks(self) -> int:
        return len(self.norms)

    def slot(self, task: int | None = None) -> nn.modules.batchnorm._BatchNorm:
        """The batch norm of ``task`` (default: the active one)."""
        t = self.task if task is None else task
        return self.norms[0 if t is None else t]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slot()(x)

    @torch.no_grad()
    def copy_slot(self, src: int, dst: int) -> None:
        """Start task ``dst`` from task ``src``'s scale, bias and statistics (e.g. the pretrained ones)."""
        self.norms[dst].load_state_dict(self.norms[src].state_dict())

    def extra_repr(self) -> str:
        return f"{self.num_features}, n_tasks={self.n_tasks}"


def task_norms(module: nn.Module) -> Iterator[TaskBatchNorm]:
    return (m for m in module.modules() if isinstance(m, TaskBatchNorm))


def task_specific_norms(module: nn.Module, n_tasks: int,
                        cls: type[TaskBatchNorm] = TaskBatchNorm) -> list[TaskBatchNorm]:
    """Make every ``BatchNorm1d``/``BatchNorm2d`` of a network (a user's own) task-specific, in place: each
    becomes a :class:`TaskBatchNorm` (or ``cls``) of ``n_tasks`` slots, every slot starting from the original's
    scale, bias and running statistics. The network's ``forward`` keeps calling the same attribute."""
    names = qualified_names(module)

    def build(norm: nn.Module) -> TaskBatchNorm:
        if not (norm.affine and norm.track_running_stats):
            raise ConfigError(f"batch norm {names.get(id(norm), '?')!r} has affine=False or "
                              f"track_running_stats=False; task-specific batch norm needs both")
        dims = 1 if isinstance(norm, nn.BatchNorm1d) else 2
        new = cls(norm.num_features, n_tasks, dims=dims, eps=norm.eps, momentum=norm.momentum)
        for slot in new.norms:
            slot.load_state_dict(norm.state_dict())
        new.to(norm.weight.device)
        new.train(norm.training)
        return new

    replace_layers(module, build, (nn.BatchNorm1d, nn.BatchNorm2d),
                   keep=lambda parent, child: isinstance(parent, TaskBatchNorm))
    return list(task_norms(module))


__all__ = ["TaskBatchNorm", "TaskConditioned", "select_task", "task_norms", "task_specific_norms"]
