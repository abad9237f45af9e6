"""Benchmarks from a researcher's own data: tensors or any indexable torch dataset."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import data
from ..errors import ConfigError
from .base import Benchmark, check_scenario
from .split import SplitOptions, input_pipeline, tasks_from_classes


def from_tensors(
    x: torch.Tensor,
    y: torch.Tensor,
    classes_per_task: int = 2,
    scenario: str = "class",
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    class_order: Sequence[int] | None = None,
    normalize: bool = False,
    seed: int = 0,
    name: str = "custom",
    default_backbone: str | None = None,
) -> Benchmark:
    """Split ``(x, y)`` into tasks of ``classes_per_task`` classes.

    ``x`` may be uint8 images (N x C x H x W, scaled by 1/255) or float features of any shape; ``y``
    holds integer class ids. Without ``test_x``/``test_y`` a stratified ``test_fraction`` is held out.
    """
    check_scenario(scenario)
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if y.dim() != 1 or (y < 0).any():
        raise ConfigError("y must be a 1-D tensor of non-negative integer class ids")
    if (test_x is None) != (test_y is None):
        raise ConfigError("give both test_x and test_y, or neither")
    if test_x is None:
        from .base import stratified_split

        keep, held = stratified_split(y, test_fraction, torch.Generator().manual_seed(seed))
        x, y, test_x, test_y = x[keep], y[keep], x[held], y[held]
    test_x, test_y = torch.as_tensor(test_x), torch.as_tensor(test_y).long()
    present = sorted(set(torch.unique(y).tolist()))
    n_classes = max(present) + 1
    ds = data.Dataset(name, x, y, test_x, test_y, [str(c) for c in range(n_classes)])
    order = list(class_order) if class_order is not None else present
    if len(order) % classes_per_task:
        raise ConfigError(f"{len(order)} classes cannot be split into tasks of {classes_per_task}")
    groups = [order[i : i + classes_per_task] for i in range(0, len(order), classes_per_task)]
    opts = SplitOptions(classes_per_task=classes_per_task, val_fraction=val_fraction, normalize=normalize)
    transform = input_pipeline(ds, normalize and x.dim() == 4, "none", "none")
    tasks, n_out = tasks_from_classes(ds, groups, scenario, seed, opts, transform)
    backbone = default_backbone or ("mlp" if x.dim() <= 3 or x.shape[-1] < 16 else "simple-cnn")
    return Benchmark(name, scenario, tasks, tuple(x.shape[1:]), n_out, default_backbone=backbone, dataset=name,
                     class_names=ds.classes)


def from_dataset(dataset, test_dataset=None, **kwargs) -> Benchmark:
    """Like :func:`from_tensors` for any indexable dataset of ``(input, label)`` pairs (e.g. a torch Dataset)."""

    def stack(ds):
        if len(ds) == 0:
            raise ConfigError("the dataset is empty")
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack([torch.as_tensor(v) for v in xs]), torch.as_tensor([int(v) for v in ys])

    x, y = stack(dataset)
    if test_dataset is not None:
        kwargs["test_x"], kwargs["test_y"] = stack(test_dataset)
    return from_tensors(x, y, **kwargs)
