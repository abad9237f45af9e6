"""MNIST-family loaders: the original gzip-compressed IDX files (MNIST, Fashion-MNIST, KMNIST)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError
from .base import Dataset, RemoteFile, ensure_files

_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ChecksumError(f"{path}: not a valid gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ChecksumError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise ChecksumError(f"{path}: IDX payload has {len(raw) - offset} bytes, header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def idx_files(md5s: tuple[str, str, str, str], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name, md5, tuple(m + name for m in mirrors)) for name, md5 in zip(_IDX_NAMES, md5s, strict=True)
    )


def load_idx_dataset(name: str, files: tuple[RemoteFile, ...], classes: list[str], root, download) -> Dataset:
    paths = ensure_files(name, files, root, download)
    arrays = [read_idx(paths[n]) for n in _IDX_NAMES]
    train_x, train_y, test_x, test_y = (torch.from_numpy(a.copy()) for a in arrays)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ChecksumError(f"{name}: image and label files disagree on the number of samples")
    return Dataset(
        name=name,
        train_x=train_x.unsqueeze(1),
        train_y=train_y.long(),
        test_x=test_x.unsqueeze(1),
        test_y=test_y.long(),
        classes=classes,
    )
