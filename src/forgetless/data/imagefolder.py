"""Image folders (``imagefolder``): a directory of class folders of image files, decoded once with Pillow.

Layout (class names are the folder names; the same classes in both splits)::

    root/train/<class>/<image>      # any Pillow-readable file: .jpg .jpeg .png .bmp .gif .webp .tif .tiff .ppm
    root/test/<class>/<image>       # optional; ``val/`` is read when there is no ``test/``

Without ``test/`` (and ``val/``) a fixed stratified ``test_fraction`` of each class (seeded with 0,
independent of the run seed, at least one image per class when the class has two) is the test set; the
class folders may then also sit directly under ``root``.

**Resize rule.** Every image is converted to RGB, its *shorter* side resized to ``size`` (bilinear, Pillow's
antialiased resampling when shrinking) and the central ``size x size`` square kept: the aspect ratio is
preserved and nothing is padded (ImageNet's evaluation crop, at ratio 1).

**Cache.** The decoded uint8 tensors are saved to ``<data root>/cache/imagefolder/<name>-<key>.pt`` (tensors
only, read back with ``weights_only=True``), where ``key`` hashes the list of files (relative path, size,
modification time) and the decoding options; a second run with the same files skips decoding. Changing,
adding or removing a file changes the key, so a stale cache is never read.

**Corrupt files.** An image Pillow cannot decode is a one-line :class:`~forgetless.errors.CorruptImageError`
naming the file; with ``skip_bad_images=True`` such files are left out and counted in one warning.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, CorruptImageError, DatasetNotFoundError
from .base import Dataset, resolve_root

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
_CACHE_VERSION = "1"  # bump when decoding changes, so old caches are not read


def _class_dirs(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _listing(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    """(classes, train files, test files or None) with class indices."""
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None) if train_dir != root else None
    classes = [p.name for p in _class_dirs(train_dir)]
    if not classes:
        raise DatasetNotFoundError(f"{root}: no class folders found (expected {root}/train/<class>/<images>)")
    index = {c: i for i, c in enumerate(classes)}
    train = [(f, i) for i, c in enumerate(classes) for f in _images(train_dir / c)]
    test = None
    if test_dir is not None:
        extra = [p.name for p in _class_dirs(test_dir) if p.name not in index]
        if extra:
            raise ConfigError(f"{test_dir}: class folder {extra[0]!r} is not in {train_dir}")
        test = [(f, index[c.name]) for c in _class_dirs(test_dir) for f in _images(c)]
    empty = [c for i, c in enumerate(classes) if not any(y == i for _, y in train)]
    if empty:
        raise DatasetNotFoundError(f"{train_dir / empty[0]}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes, train, test


def _key(root: Path, files: list[tuple[Path, int]], size: int, test_fraction: float, skip_bad: bool) -> str:
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{size}|{test_fraction}|{skip_bad}".encode())
    for f, y in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}|{y}\n".encode())
    return digest.hexdigest()[:20]


def decode_image(path: Path, size: int) -> np.ndarray:
    """One file -> uint8 ``size x size x 3`` (RGB, shorter side to ``size``, centre crop)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.array(img, dtype=np.uint8)  # a writable copy for torch.from_numpy


def _decode_all(files: list[tuple[Path, int]], size: int, skip_bad: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    from PIL import Image

    x = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    y = torch.empty(len(files), dtype=torch.int64)
    n, bad = 0, 0
    for f, label in files:
        try:
            array = decode_image(f, size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            if not skip_bad:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CorruptImageError(f"{f}: cannot decode image ({why}); replace or delete it, or pass "
                                        f"--bench skip_bad_images=true to leave such files out") from None
            bad += 1
            continue
        x[n] = torch.from_numpy(array).permute(2, 0, 1)
        y[n] = label
        n += 1
    return x[:n].clone() if n < len(files) else x, y[:n].clone() if n < len(files) else y, bad


def _split(y: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean test mask: a fixed stratified ``fraction`` of every class (seed 0)."""
    g = torch.Generator().manual_seed(0)
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique().tolist():
        idx = torch.nonzero(y == c).flatten()
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        test[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return test


def _mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, in chunks (no float copy of the whole set)."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(x), 1024):
        xb = x[start : start + 1024].double().div_(255.0)
        total += xb.sum(dim=(0, 2, 3))
        squares += xb.square().sum(dim=(0, 2, 3))
    count = max(1, x.numel() // 3)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_folder(path: str | os.PathLike, size: int = 224, test_fraction: float = 0.2, skip_bad_images: bool = False,
                cache_root: str | os.PathLike | None = None, cache: bool = True) -> Dataset:
    """The image folder at ``path`` as a :class:`Dataset` of uint8 ``3 x size x size`` images (see module doc)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    if size < 4:
        raise ConfigError(f"image folder size must be >= 4, got {size}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    classes, train, test = _listing(root)
    files = train + (test or [])
    key = _key(root, files, size, test_fraction, skip_bad_images)
    cache_file = resolve_root(cache_root) / "cache" / "imagefolder" / f"{root.name}-{key}.pt"
    if cache and cache_file.is_file():
        blob = torch.load(cache_file, map_location="cpu", weights_only=True)
    else:
        tx, ty, bad = _decode_all(train, size, skip_bad_images)
        if test is None:
            mask = _split(ty, test_fraction)
            vx, vy, tx, ty = tx[mask], ty[mask], tx[~mask], ty[~mask]
        else:
            vx, vy, bad_test = _decode_all(test, size, skip_bad_images)
            bad += bad_test
        blob = {"train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy, "bad": torch.tensor(bad)}
        if cache:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                part = cache_file.with_name(cache_file.name + ".part")
                torch.save(blob, part)
                os.replace(part, cache_file)  # atomic: a cache under its final name is complete
            except OSError as exc:
                warnings.warn(f"could not write the image cache {cache_file}: {exc.strerror}", stacklevel=2)
    bad = int(blob["bad"])
    if bad:
        warnings.warn(f"{root}: skipped {bad} image file(s) that could not be decoded", stacklevel=2)
    mean, std = _mean_std(blob["train_x"])
    return Dataset(root.name, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], classes, mean, std)


__all__ = ["IMAGE_SUFFIXES", "decode_image", "load_folder"]
