"""Writers for tiny dataset files in the original distribution formats (for loader tests)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import scipy.io


def write_idx(path: Path, array: np.ndarray, mtime: int = 0) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as fh:
        fh.write(header + array.tobytes())


def write_idx_dataset(directory: Path, n_train: int = 40, n_test: int = 20, side: int = 28, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.randint(0, 256, (n_train, side, side)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.randint(0, 256, (n_test, side, side)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def _add_pickle(tar: tarfile.TarFile, name: str, obj) -> None:
    blob = pickle.dumps(obj)
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_cifar10(path: Path, per_batch: int = 20, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            _add_pickle(tar, f"cifar-10-batches-py/data_batch_{i}", {
                b"data": rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8),
                b"labels": [int(v) for v in np.arange(per_batch) % 10]})
        _add_pickle(tar, "cifar-10-batches-py/test_batch", {
            b"data": rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8),
            b"labels": [int(v) for v in np.arange(per_batch) % 10]})
        _add_pickle(tar, "cifar-10-batches-py/batches.meta",
                    {b"label_names": [f"c{i}".encode() for i in range(10)]})


def write_cifar100(path: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, n in (("train", n_train), ("test", n_test)):
            _add_pickle(tar, f"cifar-100-python/{name}", {
                b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                b"fine_labels": [int(v) for v in np.arange(n) % 100],
                b"coarse_labels": [int(v) for v in np.arange(n) % 20]})
        _add_pickle(tar, "cifar-100-python/meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})


def write_svhn(path: Path, n: int = 30, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rng.randint(0, 256, (32, 32, 3, n)).astype(np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, where 10 is the digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
