"""Dataset container, data-root resolution and verified, resumable downloads.

Files are kept in their original distribution format under ``<root>/<dataset>/``; every file is
MD5-checked before it is decoded, so a corrupt or truncated file is a ChecksumError, never a crash
deep inside gzip/numpy.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
            x = self.train_x.float().div_(255.0)
            dims = [d for d in range(x.dim()) if d != 1]
            self.mean = tuple(x.mean(dim=dims).tolist())
            self.std = tuple(x.std(dim=dims).tolist())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


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
