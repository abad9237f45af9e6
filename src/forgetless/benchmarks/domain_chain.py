"""``domain-chain``: a pretraining task followed by new tasks, each its own domain and head (task-IL).

The CPU-scale analogue of the ImageNet-to-Sketch and Visual Decathlon protocols of Mancini et al. (2018)
and Piggyback (Mallya et al., 2018): a backbone is first trained on task 1 (the "pretrained baseline"),
then every further task adds a new domain with its own classifier. Transfer methods (Piggyback, the
affine transformations, PackNet, classifier-only, individual networks) train the backbone on task 1
themselves, with the same shared routine and seed (see ``forgetless.methods.pretrained``).

Two kinds of chain:

- ``domains=`` (default ``mnist,permuted,rotated-90,inverted,shuffled-classes``): one dataset (``base``,
  default MNIST) seen through a different fixed transformation per task: the identity, a pixel permutation,
  a 90-degree rotation, inverted intensities (1 - x), and a fixed derangement of the class labels. The
  tasks share the same (sub-sampled) images, as in permuted MNIST.
- ``datasets=`` (e.g. ``mnist,fashion-mnist,kmnist,svhn,cifar10``): real datasets, all their classes per task,
  resized to a common shape (``size`` x ``size``, ``channels``; grey images are repeated to 3 channels, colour
  ones averaged to 1) once at build time.

A ``datasets`` entry is a registered dataset name, ``folder:PATH`` (an image folder, see
:mod:`forgetless.data.imagefolder`: ``PATH/train/<class>/*``, ``PATH/test/<class>/*``), or any other name
``X``, read as the image folder ``<data root>/X`` (so the paper configs' ``cubs``, ``sketch``, ... run once
the folders are there). Image folders are decoded at ``size`` (default 224) with ``test_fraction`` (for a
folder without ``test/``) and ``skip_bad_images``.

Normalisation (``normalize``, on by default for ``datasets``): ``mean_std=dataset`` standardises each task
with its own training images' per-channel mean and std; ``mean_std=imagenet`` uses ImageNet's
(:data:`forgetless.nn.torchvision_layouts.IMAGENET_MEAN` / ``IMAGENET_STD``), what a torchvision-pretrained
backbone (``--set pretrained=PATH``) was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from .. import data
from ..config import option
from ..errors import ConfigError, choices
from ..nn.torchvision_layouts import IMAGENET_MEAN, IMAGENET_STD
from .base import Benchmark, Split, Task, assign_labels, register
from .split import SplitOptions, tasks_from_classes
from .transforms import Compose, Invert, PermutePixels, Rotate90, ToFloat

DOMAINS = ("mnist", "permuted", "rotated-90", "inverted", "shuffled-classes")
_IDENTITY = {"mnist", "identity", "original"}
_KNOWN = _IDENTITY | {"permuted", "rotated-90", "inverted", "shuffled-classes"}
FOLDER_SIZE = 224  # decoding side of image folders when ``size`` is not given (the pretrained networks' input)


@dataclass
class DomainChainOptions:
    domains: tuple[str, ...] = DOMAINS  # a chain of transformations of ``base`` (ignored with ``datasets``)
    base: str = "mnist"  # the dataset the ``domains`` chain transforms
    datasets: tuple[str, ...] | None = None  # a chain of real datasets instead (the first is the pretraining task)
    size: int | None = option(None, ge=4)  # common image side for ``datasets`` (default: the largest)
    channels: Literal[1, 3] | None = None  # common channels for ``datasets`` (default: 3 if any is colour, else 1)
    val_fraction: float = 0.1
    train_per_class: int | None = None
    test_per_class: int | None = None
    normalize: bool | None = None  # None: off for the ``domains`` chain (inversion needs [0, 1]), on for ``datasets``
    # "dataset" (each task's own statistics) or "imagenet" (pretrained backbones)
    mean_std: Literal["dataset", "imagenet"] = "dataset"
    # image folders without a test/ folder: stratified test share per class
    test_fraction: float = option(0.2, gt=0, lt=1)
    skip_bad_images: bool = False  # image folders: leave undecodable files out (with a warning), else an error

    def validate(self) -> None:
        if self.datasets is None:
            unknown = [d for d in self.domains if d not in _KNOWN]
            if unknown:
                raise ConfigError(f"unknown domain(s) {unknown}; valid: {choices(_KNOWN)}")
            if len(self.domains) < 1:
                raise ConfigError("domains needs at least one entry")
            if self.normalize and "inverted" in self.domains:
                raise ConfigError("the inverted domain needs inputs in [0, 1]; use normalize=false")
        elif len(self.datasets) < 1:
            raise ConfigError("datasets needs at least one dataset name")


def _derangement(n: int, g: torch.Generator) -> torch.Tensor:
    """A random permutation of 0..n-1 with no fixed point (every class changes its label)."""
    while True:
        perm = torch.randperm(n, generator=g)
        if n < 2 or not bool((perm == torch.arange(n)).any()):
            return perm


@register("domain-chain", DomainChainOptions,
          "pretraining task then new domains, each with its own head (MNIST transforms or real datasets)",
          scenarios=("task",))
def _domain_chain(scenario: str, seed: int, opts: DomainChainOptions, data_root: str | None) -> Benchmark:
    if opts.datasets is not None:
        return _dataset_chain(scenario, seed, opts, data_root)
    ds = data.load(opts.base, data_root)
    base = Compose(ToFloat(ds.mean, ds.std) if opts.normalize else ToFloat())
    classes = list(range(ds.n_classes))
    n = len(opts.domains)
    labels, _, n_out = assign_labels([classes] * n, scenario)
    g = torch.Generator().manual_seed(seed)
    split_opts = SplitOptions(classes_per_task=len(classes), val_fraction=opts.val_fraction,
                              train_per_class=opts.train_per_class, test_per_class=opts.test_per_class)
    # Every domain sees the same images (only the transformation differs), so sub-sample once.
    (proto,), _ = tasks_from_classes(ds, [classes], "domain", seed, split_opts, base)
    c, h, w = ds.shape
    if "rotated-90" in opts.domains and h != w:
        raise ConfigError(f"the rotated-90 domain needs square images; {opts.base} is {h}x{w}")
    tasks = []
    for t, domain in enumerate(opts.domains):
        transform, relabel = base, torch.arange(len(classes))
        if domain == "permuted":
            transform = base.then(PermutePixels(torch.randperm(h * w, generator=g)))
        elif domain == "rotated-90":
            transform = base.then(Rotate90(1))
        elif domain == "inverted":
            transform = base.then(Invert())
        elif domain == "shuffled-classes":
            relabel = _derangement(len(classes), g)
        offset = labels[t][0]
        parts = [Split(s.x, relabel[s.y] + offset, transform) for s in (proto.train, proto.val, proto.test)]
        tasks.append(Task(t, classes, labels[t], *parts, name=f"{opts.base}:{domain}"))
    return Benchmark("domain-chain", scenario, tasks, (c, h, w), n_out, default_backbone="mlp", dataset=opts.base,
                     class_names=ds.classes)


def resize_images(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 N x C x H x W -> uint8 N x ``channels`` x ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    out = []
    for start in range(0, len(x), 4096):  # bounded memory for large datasets
        xb = x[start : start + 4096].float()
        if xb.shape[-1] != size or xb.shape[-2] != size:
            shrink = size < max(xb.shape[-2:])
            xb = F.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        if xb.shape[1] != channels:
            xb = xb.repeat(1, channels, 1, 1) if xb.shape[1] == 1 else xb.mean(1, keepdim=True)
        out.append(xb.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.empty(0, channels, size, size, dtype=torch.uint8)  # an empty split


def _mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    xf = x.float().div_(255.0)
    return tuple(xf.mean(dim=(0, 2, 3)).tolist()), tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())


def _load_chain_dataset(name: str, opts: DomainChainOptions, data_root: str | None) -> data.Dataset:
    """A registered dataset, ``folder:PATH``, or the image folder ``<data root>/<name>``."""
    folder = None
    if name.startswith("folder:"):
        folder = Path(name.removeprefix("folder:")).expanduser()
    elif name not in data.DATASETS:
        folder = data.resolve_root(data_root) / name
        if not folder.is_dir():
            raise ConfigError(f"unknown dataset {name!r} (and no image folder {folder}); valid: "
                              f"{choices(data.DATASETS)}, folder:PATH, or a folder under the data root")
    if folder is None:
        return data.load(name, data_root)
    return data.load_folder(folder, opts.size or FOLDER_SIZE, opts.test_fraction, opts.skip_bad_images,
                            cache_root=data_root)


def _dataset_chain(scenario: str, seed: int, opts: DomainChainOptions, data_root: str | None) -> Benchmark:
    sets = [_load_chain_dataset(name, opts, data_root) for name in opts.datasets]
    size = opts.size or max(max(d.shape[1:]) for d in sets)
    channels = opts.channels or (3 if any(d.shape[0] == 3 for d in sets) else 1)
    normalize = True if opts.normalize is None else opts.normalize
    labels, _, n_out = assign_labels([list(range(d.n_classes)) for d in sets], scenario)
    split_opts = SplitOptions(classes_per_task=1, val_fraction=opts.val_fraction, train_per_class=opts.train_per_class,
                              test_per_class=opts.test_per_class)
    tasks = []
    for t, ds in enumerate(sets):
        classes = list(range(ds.n_classes))
        # Sub-sample first, then resize only what is kept.
        (raw,), _ = tasks_from_classes(ds, [classes], "domain", seed + t, split_opts, Compose(), names=[ds.name])
        xs = [resize_images(s.x, size, channels) for s in (raw.train, raw.val, raw.test)]
        stats = (IMAGENET_MEAN, IMAGENET_STD) if opts.mean_std == "imagenet" else _mean_std(xs[0])
        if channels == 1 and opts.mean_std == "imagenet":
            stats = ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
        transform = Compose(ToFloat(*stats) if normalize else ToFloat())
        offset = labels[t][0]
        parts = [Split(x, s.y + offset, transform) for x, s in zip(xs, (raw.train, raw.val, raw.test), strict=True)]
        tasks.append(Task(t, classes, labels[t], *parts, name=ds.name))
    return Benchmark("domain-chain", scenario, tasks, (channels, size, size), n_out,
                     default_backbone="mlp" if size <= 32 and channels == 1 else "simple-cnn",
                     dataset=",".join(opts.datasets), class_names=[f"{d.name}:{c}" for d in sets for c in d.classes])
