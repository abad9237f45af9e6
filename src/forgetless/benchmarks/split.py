"""Split-class benchmarks (Split MNIST & co.), Permuted MNIST and CIFAR-10/100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .. import data
from ..config import option
from ..errors import ConfigError
from .base import Benchmark, Split, Task, assign_labels, register, relabel, stratified_split
from .transforms import Compose, Pad, PermutePixels, RandomCropFlip, ToFloat, Transform


@dataclass
class SplitOptions:
    classes_per_task: int = option(2, ge=1)
    # explicit order, "random" (from the seed), "vandeven" (van de Ven & Tolias' pairing for the seed) or None
    class_order: tuple[int, ...] | str | None = None
    n_tasks: int | None = None  # keep only the first n tasks
    val_fraction: float = 0.1
    train_per_class: int | None = None  # subsample the training data (quick runs)
    test_per_class: int | None = None
    # Standardise with the training set's per-channel mean/std. None = the dataset's default: off for
    # the MNIST family and digits (pixels in [0, 1], as van de Ven & Tolias and the hypernetwork paper,
    # and as Bernoulli VAEs need), on for SVHN and CIFAR.
    normalize: bool | None = None
    augment: Literal["none", "crop", "flip", "crop,flip"] | None = None  # None = the dataset's default


def _order(option, classes: list[int], seed: int) -> list[int]:
    if option is None:
        return list(classes)
    if option == "random":
        g = torch.Generator().manual_seed(seed)
        return [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    if option == "vandeven":
        # GMvandeVen/continual-learning data.py: new label p[y] for digit y, p = np.random.permutation(10) right
        # after np.random.seed(seed) (their main.py's first numpy draw; seed 0 keeps the digits in order); task
        # k holds the new labels 2k, 2k+1, so the class order is the inverse permutation.
        if seed == 0:
            return list(classes)
        perm = np.random.RandomState(seed).permutation(len(classes))
        return [classes[i] for i in np.argsort(perm).tolist()]
    if isinstance(option, str):
        raise ConfigError(f"class_order must be a list of class ids, 'random' or 'vandeven', got {option!r}")
    order = list(option)
    if sorted(order) != sorted(set(order)) or not set(order) <= set(classes):
        raise ConfigError(f"class_order must list distinct classes among {classes}, got {order}")
    return order


def _take_per_class(y: torch.Tensor, classes: list[int], limit: int | None, g: torch.Generator) -> torch.Tensor:
    idx = []
    for c in classes:
        members = torch.nonzero(y == c).flatten()
        if limit is not None and len(members) > limit:
            members = members[torch.randperm(len(members), generator=g)[:limit]].sort().values
        idx.append(members)
    return torch.cat(idx).sort().values


def _augmentation(option: str | None, default: str) -> Transform | None:
    option = default if option is None else option
    if option == "none":
        return None
    return RandomCropFlip(pad=4 if "crop" in option else 0, flip="flip" in option)


def input_pipeline(ds: data.Dataset, normalize: bool | None, augment: str | None, default_augment: str) -> Compose:
    if normalize is None:
        normalize = ds.train_x.shape[1] == 3  # colour datasets (SVHN, CIFAR) are standardised by default
    return Compose(
        ToFloat(ds.mean, ds.std) if normalize else ToFloat(),
        _augmentation(augment, default_augment),
    )


def tasks_from_classes(
    ds: data.Dataset, task_classes: list[list[int]], scenario: str, seed: int, opts: SplitOptions,
    transform: Transform, names: list[str] | None = None, start_id: int = 0,
) -> tuple[list[Task], int]:
    """Build one Task per class group of ``ds`` (train/val/test), labelled for ``scenario``."""
    labels, maps, n_outputs = assign_labels(task_classes, scenario)
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t, classes in enumerate(task_classes):
        train_idx = _take_per_class(ds.train_y, classes, opts.train_per_class, g)
        test_idx = _take_per_class(ds.test_y, classes, opts.test_per_class, g)
        y = ds.train_y[train_idx]
        keep, held = stratified_split(y, opts.val_fraction, g)
        train = Split(ds.train_x[train_idx[keep]], relabel(y[keep], maps[t]), transform)
        val = Split(ds.train_x[train_idx[held]], relabel(y[held], maps[t]), transform)
        test = Split(ds.test_x[test_idx], relabel(ds.test_y[test_idx], maps[t]), transform)
        name = names[t] if names else f"{ds.name}:{','.join(map(str, classes))}"
        tasks.append(Task(start_id + t, list(classes), labels[t], train, val, test, name))
    return tasks, n_outputs


def _split_benchmark(name: str, dataset: str, backbone: str, augment: str):
    def factory(scenario: str, seed: int, opts: SplitOptions, data_root: str | None) -> Benchmark:
        ds = data.load(dataset, data_root)
        order = _order(opts.class_order, list(range(ds.n_classes)), seed)
        k = opts.classes_per_task
        if len(order) % k:
            raise ConfigError(f"{name}: {len(order)} classes cannot be split into tasks of {k}")
        groups = [order[i : i + k] for i in range(0, len(order), k)]
        if opts.n_tasks is not None:
            if not 1 <= opts.n_tasks <= len(groups):
                raise ConfigError(f"{name}: n_tasks must be in 1..{len(groups)}, got {opts.n_tasks}")
            groups = groups[: opts.n_tasks]
        transform = input_pipeline(ds, opts.normalize, opts.augment, augment)
        tasks, n_out = tasks_from_classes(ds, groups, scenario, seed, opts, transform)
        return Benchmark(name, scenario, tasks, ds.shape, n_out, default_backbone=backbone, dataset=dataset,
                         class_names=ds.classes)

    return factory


for _name, _ds, _bb, _aug, _desc in [
    ("split-mnist", "mnist", "mlp", "none", "MNIST, 5 tasks x 2 consecutive classes"),
    ("split-fmnist", "fashion-mnist", "mlp", "none", "Fashion-MNIST, 5 tasks x 2 classes"),
    ("split-kmnist", "kmnist", "mlp", "none", "KMNIST, 5 tasks x 2 classes"),
    ("split-svhn", "svhn", "simple-cnn", "crop", "SVHN, 5 tasks x 2 classes (random-crop augmentation)"),
    ("split-cifar10", "cifar10", "simple-cnn", "crop,flip", "CIFAR-10, 5 tasks x 2 classes (crop+flip)"),
    ("split-cifar100", "cifar100", "resnet18", "crop,flip", "CIFAR-100, tasks of classes_per_task classes"),
    ("split-digits", "digits", "mlp", "none", "scikit-learn 8x8 digits, 5 tasks x 2 classes (no files)"),
]:
    register(_name, SplitOptions, _desc)(_split_benchmark(_name, _ds, _bb, _aug))


@dataclass
class PermutedOptions:
    n_tasks: int = option(10, ge=1)
    pad: int = option(2, ge=0, source="van de Ven & Tolias")  # they pad MNIST to 32x32 before permuting
    val_fraction: float = 0.1
    train_per_class: int | None = None
    test_per_class: int | None = None
    normalize: bool = False  # as in van de Ven & Tolias and the hypernetwork paper: pixels in [0, 1]
    first_unpermuted: bool = True


@register("permuted-mnist", PermutedOptions, "MNIST with a fixed pixel permutation per task (task 1 unpermuted)")
def _permuted(scenario: str, seed: int, opts: PermutedOptions, data_root: str | None) -> Benchmark:
    ds = data.load("mnist", data_root)
    base = Compose(ToFloat(ds.mean, ds.std) if opts.normalize else ToFloat(), Pad(opts.pad) if opts.pad else None)
    shape = base.output_shape(ds.shape)
    classes = list(range(10))
    labels, _, n_out = assign_labels([classes] * opts.n_tasks, scenario)
    g = torch.Generator().manual_seed(seed)
    split_opts = SplitOptions(classes_per_task=10, val_fraction=opts.val_fraction,
                              train_per_class=opts.train_per_class, test_per_class=opts.test_per_class)
    # The data are shared by every task (only the permutation differs), so sub-sample once.
    (proto,), _ = tasks_from_classes(ds, [classes], "domain", seed, split_opts, base)
    tasks = []
    for t in range(opts.n_tasks):
        n_pixels = shape[1] * shape[2]
        perm = torch.arange(n_pixels) if (t == 0 and opts.first_unpermuted) else torch.randperm(n_pixels, generator=g)
        transform = base.then(PermutePixels(perm))
        offset = labels[t][0]
        parts = [Split(s.x, s.y + offset, transform) for s in (proto.train, proto.val, proto.test)]
        tasks.append(Task(t, classes, labels[t], *parts, name=f"permutation {t}"))
    return Benchmark("permuted-mnist", scenario, tasks, shape, n_out, default_backbone="mlp", dataset="mnist",
                     class_names=ds.classes)


@dataclass
class Cifar10100Options:
    n_tasks: int = 5  # CIFAR-100 tasks after the CIFAR-10 one
    classes_per_task: int = 10
    val_fraction: float = 0.1
    train_per_class: int | None = None
    test_per_class: int | None = None
    normalize: bool = True
    augment: str | None = None


@register("cifar10-100", Cifar10100Options, "task 1 = all of CIFAR-10, then CIFAR-100 tasks of 10 consecutive classes")
def _cifar10_100(scenario: str, seed: int, opts: Cifar10100Options, data_root: str | None) -> Benchmark:
    c10, c100 = data.load("cifar10", data_root), data.load("cifar100", data_root)
    if opts.n_tasks * opts.classes_per_task > 100:
        raise ConfigError("cifar10-100: n_tasks * classes_per_task must be <= 100")
    # One combined dataset: CIFAR-100 classes become ids 10..109.
    merged = data.Dataset(
        "cifar10-100", torch.cat([c10.train_x, c100.train_x]), torch.cat([c10.train_y, c100.train_y + 10]),
        torch.cat([c10.test_x, c100.test_x]), torch.cat([c10.test_y, c100.test_y + 10]),
        c10.classes + c100.classes, c10.mean, c10.std,  # normalised with CIFAR-10 statistics (the first task)
    )
    k = opts.classes_per_task
    groups = [list(range(10))] + [list(range(10 + i * k, 10 + (i + 1) * k)) for i in range(opts.n_tasks)]
    split_opts = SplitOptions(classes_per_task=k, val_fraction=opts.val_fraction, train_per_class=opts.train_per_class,
                              test_per_class=opts.test_per_class, normalize=opts.normalize, augment=opts.augment)
    transform = input_pipeline(merged, opts.normalize, opts.augment, "crop,flip")
    tasks, n_out = tasks_from_classes(merged, groups, scenario, seed, split_opts, transform)
    return Benchmark("cifar10-100", scenario, tasks, merged.shape, n_out, default_backbone="resnet18",
                     dataset="cifar10-100", class_names=merged.classes)
