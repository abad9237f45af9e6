"""Dataset container, data-root resolution and verified, resumable downloads.

Files are kept in their original distribution format under ``<root>/<dataset>/``; every file is
MD5-checked before it is decoded, so a corrupt or truncated file is a ChecksumError, never a crash
deep inside gzip/numpy.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError, DatasetNotFoundError

ENV_VAR = "FORGETLESS_DATA"
DEFAULT_ROOT = Path("~/.cache/forgetless").expanduser()
_CHUNK = 1 << 20


@dataclass
class Dataset:
    """Images as uint8 N x C x H x W tensors and int64 labels, kept in memory."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean, self.std = channel_statistics(self.train_x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def channel_statistics(x: torch.Tensor, chunk: int = 1 << 20) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and unbiased std of ``x / 255`` per channel (dim 1), over every other dim.

    For uint8 images the statistics are exact and cost no float copy of the dataset (a float32 copy of MNIST
    is 188 MB, and ``std`` made a second one): per channel a 256-bin histogram, accumulated over chunks of
    about ``chunk`` values, gives the integer sums S1 = sum v and S2 = sum v^2, then mean = S1 / (255 n) and
    var = (n S2 - S1^2) / (n (n - 1) 255^2), both divided exactly in Python integers and rounded once.
    Other dtypes (user features, usually small) take the plain float computation, out of place.
    """
    if x.dtype != torch.uint8 or x.dim() < 2:
        xf = x.float() / 255.0  # out of place: .float() of a float32 tensor is the tensor itself
        dims = [d for d in range(xf.dim()) if d != 1]
        mean, std = xf.mean(dim=dims), xf.std(dim=dims)
        return tuple(mean.reshape(-1).tolist()), tuple(std.reshape(-1).tolist())
    channels = x.shape[1]
    images = x.reshape(x.shape[0], channels, math.prod(x.shape[2:])).numpy()
    counts = np.zeros((channels, 256), dtype=np.int64)
    step = max(1, chunk // max(channels * images.shape[2], 1))
    for start in range(0, len(images), step):
        for c in range(channels):
            # numpy's bincount: 20x faster than torch's here, and it widens only a chunk to intp
            counts[c] += np.bincount(images[start : start + step, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(channels):
        # int64 is exact here: s2 <= n * 255^2 < 2^63 for n below 10^14 values per channel
        n, s1, s2 = int(counts[c].sum()), int(counts[c] @ values), int(counts[c] @ values**2)
        means.append(s1 / (255 * n) if n else math.nan)
        stds.append(math.sqrt((n * s2 - s1 * s1) / (n * (n - 1) * 255 * 255)) if n > 1 else math.nan)
    return tuple(means), tuple(stds)


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official release: its name, MD5 and the URLs it can be fetched from."""

    name: str
    md5: str
    urls: tuple[str, ...]


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$FORGETLESS_DATA``, else ``~/.cache/forgetless``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_ROOT


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# Every file verified in this process: path -> md5 (results.json records the files a run's data came from).
VERIFIED: dict[str, str] = {}


def verify(path: Path, expected: str, dataset: str) -> None:
    actual = md5sum(path)
    if actual == expected:
        VERIFIED[str(Path(path).resolve())] = actual
    if actual != expected:
        raise ChecksumError(
            f"{dataset}: checksum mismatch for {path} (md5 {actual}, expected {expected}); the file is "
            f"corrupt or truncated: delete it and let forgetless download it again, or replace it with "
            f"the official file"
        )


def _download(url: str, dest: Path, timeout: float) -> None:
    """Fetch ``url`` into ``dest`` via ``dest.part``, resuming a partial download with an HTTP Range."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "forgetless"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and getattr(response, "status", 200) == 206
        with open(part, "ab" if resumed else "wb") as fh:
            for block in iter(lambda: response.read(_CHUNK), b""):
                fh.write(block)
    os.replace(part, dest)  # atomic: a file under its final name is always complete


def ensure_files(
    dataset: str,
    files: tuple[RemoteFile, ...],
    root: str | os.PathLike | None = None,
    download: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Return verified local paths of ``files``, downloading the missing ones when allowed."""
    directory = resolve_root(root) / dataset
    paths: dict[str, Path] = {}
    missing = [f for f in files if not (directory / f.name).is_file()]
    failures: list[str] = []
    if missing and download:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failures.append(f"cannot create {directory}: {exc.strerror}")
        else:
            for remote in missing:
                for url in remote.urls:
                    try:
                        _download(url, directory / remote.name, timeout)
                        verify(directory / remote.name, remote.md5, dataset)
                        break
                    except (urllib.error.URLError, OSError, TimeoutError) as exc:
                        failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
                    except ChecksumError as exc:
                        (directory / remote.name).unlink(missing_ok=True)
                        failures.append(str(exc))
        missing = [f for f in files if not (directory / f.name).is_file()]
    if missing:
        why = f" (download failed: {failures[-1]})" if failures else " (download disabled)"
        raise DatasetNotFoundError(
            f"{dataset}: files not found in {directory}: {', '.join(f.name for f in missing)}{why}; "
            f"put the official files there, or point ${ENV_VAR} / --data-dir at a directory holding "
            f"{dataset}/"
        )
    for remote in files:
        path = directory / remote.name
        verify(path, remote.md5, dataset)
        paths[remote.name] = path
    return paths
