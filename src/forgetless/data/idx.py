"""MNIST-family loaders: the original gzip-compressed IDX files (MNIST, Fashion-MNIST, KMNIST)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError
from .base import Dataset, RemoteFile, ensure_files

_BLOCK = 1 << 20

_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data).

    The payload is decompressed straight into the (writable) array it returns: reading the whole file into
    bytes and copying them out held the decompressed images twice.
    """
    try:
        with gzip.open(path, "rb") as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
                raise ChecksumError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
            header = fh.read(4 * magic[3])
            if len(header) != 4 * magic[3]:
                raise ChecksumError(f"{path}: IDX header is truncated")
            dims = tuple(int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(magic[3]))
            out = np.empty(dims, dtype=np.uint8)
            view, got = memoryview(out.reshape(-1)), 0
            while got < out.size:  # in blocks: GzipFile.readinto would build the whole payload as bytes first
                n = fh.readinto(view[got : got + _BLOCK])
                if not n:
                    break
                got += n
            extra = len(fh.read(1))
    except (OSError, EOFError, zlib.error) as exc:
        raise ChecksumError(f"{path}: not a valid gzip file ({exc})") from None
    if got != out.size or extra:
        payload = f"{got}" if not extra else f"more than {got}"
        raise ChecksumError(f"{path}: IDX payload has {payload} bytes, header says {dims}")
    return out


def idx_files(md5s: tuple[str, str, str, str], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name, md5, tuple(m + name for m in mirrors)) for name, md5 in zip(_IDX_NAMES, md5s, strict=True)
    )


def load_idx_dataset(name: str, files: tuple[RemoteFile, ...], classes: list[str], root, download) -> Dataset:
    paths = ensure_files(name, files, root, download)
    arrays = [read_idx(paths[n]) for n in _IDX_NAMES]
    train_x, train_y, test_x, test_y = (torch.from_numpy(a) for a in arrays)  # read_idx's arrays are fresh
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
