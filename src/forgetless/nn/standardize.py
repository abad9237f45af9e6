"""Input standardisation fitted once and then fixed: a method that must keep old tasks' outputs bit-identical
can standardise its inputs only with statistics that never change again (here: those of the first data seen)."""

from __future__ import annotations

import torch
from torch import nn


class InputStandardizer(nn.Module):
    """``(x - mean) / std`` per channel (dim 1 of image batches; flat inputs: ``channels=1``, one scalar). The
    identity until :meth:`fit` (mean 0, std 1); the statistics are buffers, so checkpoints carry them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, eps: float = 1e-6) -> None:
        """Per-channel mean and standard deviation of the float batch ``x`` (N, C, ...); fixed from then on."""
        if bool(self.fitted):
            raise RuntimeError("InputStandardizer is already fitted; its statistics are fixed")
        x = x.float()
        values = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.reshape(1, -1)
        if values.shape[0] != self.mean.shape[0]:
            raise ValueError(f"InputStandardizer for {self.mean.shape[0]} channels got {values.shape[0]}")
        self.mean.copy_(values.mean(1))
        self.std.copy_(values.std(1).clamp_min(eps))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # unfitted: mean 0 and std 1 leave x exactly as it is (no branch, so no host sync on a device)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)
