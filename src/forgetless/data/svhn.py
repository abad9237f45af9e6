"""SVHN (cropped digits) from the official MATLAB files train_32x32.mat / test_32x32.mat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """X is 32 x 32 x 3 x N uint8, y is N x 1 with label 10 standing for the digit 0."""
    try:
        import scipy.io  # only when SVHN is read: importing scipy.io costs every other run ~10 MB

        mat = scipy.io.loadmat(path)
        x, y = mat["X"], mat["y"]
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ChecksumError(f"{path}: cannot read the .mat file ({exc})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.size:
        raise ChecksumError(f"{path}: unexpected array shapes X{x.shape} y{y.shape}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8))
    labels = torch.from_numpy(y.reshape(-1).astype(np.int64) % 10)
    return images, labels
