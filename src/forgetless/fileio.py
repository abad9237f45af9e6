"""Atomic file writes: a reader (or a killed run) never sees a half-written result or checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # what open() would give (0644 by default), not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: fh.write((json.dumps(obj, indent=2, default=json_default) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def save_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def json_default(obj: Any) -> Any:
    """What json.dumps cannot encode itself: tensors (as lists) and paths."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
