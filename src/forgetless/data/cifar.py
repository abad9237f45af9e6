"""CIFAR-10 and CIFAR-100 from the official python-version tar.gz archives."""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..errors import ChecksumError

# The only globals the official batches name (they hold dicts, lists, ints, bytes and uint8 arrays); the
# ``numpy._core`` spelling is what numpy >= 2 writes (our test archives). Anything else could run code.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Refused(Exception):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch, refusing every global but numpy's array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why a member has no place in the official archive (a link, or a path leaving the target folder)."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        return "a path outside the archive's folder"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "not a file"
    return None


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
                if why := _unsafe_member(member):
                    raise ChecksumError(f"{path}: refuses archive member {member.name!r} ({why}); "
                                        "it is not the official archive")
                if member.name in wanted:
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    try:
                        blobs[member.name] = _BatchUnpickler(fh, encoding="bytes").load()
                    except _Refused as exc:
                        raise ChecksumError(f"{path}: member {member.name} refuses to load '{exc}' (CIFAR batches "
                                            "hold only numpy arrays, lists, numbers and bytes)") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise ChecksumError(f"{path}: cannot read the archive ({exc})") from None
    for name, blob in blobs.items():
        if not isinstance(blob, dict):
            raise ChecksumError(f"{path}: member {name} is not a CIFAR batch (a {type(blob).__name__})")
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
