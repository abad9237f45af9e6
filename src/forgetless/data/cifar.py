"""CIFAR-10 and CIFAR-100 from the official python-version tar.gz archives."""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError


def read_cifar_archive(
    path: Path,
    train_members: list[str],
    test_members: list[str],
    label_key: bytes,
    meta_member: str,
    names_key: bytes,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Read the pickled batches inside a CIFAR archive: (train_x, train_y, test_x, test_y, classes)."""
    wanted = set(train_members) | set(test_members) | {meta_member}
    blobs: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    blobs[member.name] = pickle.load(fh, encoding="bytes")
    except (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise ChecksumError(f"{path}: cannot read the archive ({exc})") from None
    absent = sorted(wanted - set(blobs))
    if absent:
        raise ChecksumError(f"{path}: archive lacks {', '.join(absent)}")

    def stack(members: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [np.asarray(blobs[m][b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for m in members]
        ys = [np.asarray(blobs[m][label_key], dtype=np.int64) for m in members]
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = stack(train_members)
    test_x, test_y = stack(test_members)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in blobs[meta_member][names_key]]
    return train_x, train_y, test_x, test_y, classes
