"""Dataset loaders: original distribution files -> uint8 tensors in memory (no torchvision).

``load(name, root=None)`` returns a :class:`Dataset`; ``root`` defaults to ``$FORGETLESS_DATA``, then
``~/.cache/forgetless``. Files live in ``<root>/<name>/`` under their official names.

Image folders (``root/train/<class>/*``, ``root/test/<class>/*``) are read by :func:`load_folder`
(:mod:`forgetless.data.imagefolder`: Pillow, resized once, cached as tensors).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError, choices
from .base import ENV_VAR, Dataset, RemoteFile, ensure_files, md5sum, resolve_root
from .cifar import read_cifar_archive
from .idx import idx_files, load_idx_dataset, read_idx
from .imagefolder import load_folder
from .svhn import read_svhn_mat

__all__ = ["DATASETS", "ENV_VAR", "Dataset", "RemoteFile", "load", "load_folder", "md5sum", "read_idx", "resolve_root"]

DIGITS = [str(d) for d in range(10)]

MNIST_FILES = idx_files(
    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
)
FASHION_FILES = idx_files(
    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
     "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)
KMNIST_FILES = idx_files(
    ("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
     "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
    ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
)
_TORONTO = ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/")
CIFAR10_FILES = (
    RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
               tuple(u + "cifar-10-python.tar.gz" for u in _TORONTO)),
)
CIFAR100_FILES = (
    RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
               tuple(u + "cifar-100-python.tar.gz" for u in _TORONTO)),
)
SVHN_FILES = (
    RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373",
               ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",)),
    RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
               ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",)),
)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


def _mnist(root, download) -> Dataset:
    return load_idx_dataset("mnist", MNIST_FILES, DIGITS, root, download)


def _fashion(root, download) -> Dataset:
    return load_idx_dataset("fashion-mnist", FASHION_FILES, FASHION_CLASSES, root, download)


def _kmnist(root, download) -> Dataset:
    return load_idx_dataset("kmnist", KMNIST_FILES, KMNIST_CLASSES, root, download)


def _cifar10(root, download) -> Dataset:
    paths = ensure_files("cifar10", CIFAR10_FILES, root, download)
    base = "cifar-10-batches-py/"
    tx, ty, vx, vy, classes = read_cifar_archive(
        paths["cifar-10-python.tar.gz"],
        [f"{base}data_batch_{i}" for i in range(1, 6)], [f"{base}test_batch"],
        b"labels", f"{base}batches.meta", b"label_names",
    )
    return Dataset("cifar10", tx, ty, vx, vy, classes)


def _cifar100(root, download) -> Dataset:
    paths = ensure_files("cifar100", CIFAR100_FILES, root, download)
    base = "cifar-100-python/"
    tx, ty, vx, vy, classes = read_cifar_archive(
        paths["cifar-100-python.tar.gz"], [f"{base}train"], [f"{base}test"],
        b"fine_labels", f"{base}meta", b"fine_label_names",
    )
    return Dataset("cifar100", tx, ty, vx, vy, classes)


def _svhn(root, download) -> Dataset:
    paths = ensure_files("svhn", SVHN_FILES, root, download)
    tx, ty = read_svhn_mat(paths["train_32x32.mat"])
    vx, vy = read_svhn_mat(paths["test_32x32.mat"])
    return Dataset("svhn", tx, ty, vx, vy, DIGITS)


def _digits(root, download) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no files needed).

    There is no official test split: a fixed stratified 20% per class (seeded, independent of the run
    seed) is the test set, so every run sees the same split.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.RandomState(0)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test[rng.permutation(idx)[: round(0.2 * len(idx))]] = True
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    mask = torch.from_numpy(test)
    return Dataset("digits", x[~mask], y[~mask], x[mask], y[mask], DIGITS)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist": _mnist,
    "fashion-mnist": _fashion,
    "kmnist": _kmnist,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "svhn": _svhn,
    "digits": _digits,
}

# Each dataset's files, for documentation and `forgetless list datasets`.
FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": MNIST_FILES, "fashion-mnist": FASHION_FILES, "kmnist": KMNIST_FILES, "cifar10": CIFAR10_FILES,
    "cifar100": CIFAR100_FILES, "svhn": SVHN_FILES, "digits": (),
}


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, download: bool) -> Dataset:
    return DATASETS[name](root, download)


def clear_cache() -> None:
    """Drop the decoded datasets kept for reuse (a single run needs them only while its benchmark is built:
    the tasks hold their own copies)."""
    _load_cached.cache_clear()


def load(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load dataset ``name`` (decoded once per process; callers must not modify the tensors in place)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {choices(DATASETS)}")
    return _load_cached(name, str(resolve_root(root)), download)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
