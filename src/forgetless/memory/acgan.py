"""AC-GAN pieces (Odena et al., 2017) for DGM: the label-conditioned noise and the DCGAN-style discriminator
whose auxiliary classifier is the class-incremental task solver.

Architecture of Ostapenko et al.'s released code (``SAP-archive/machine-learning-dgm``, ``networks/net_DGMw.py``,
``netD``) for 32x32 MNIST/SVHN: three 5x5 stride-2 convolutions (ndf, 2 ndf, 4 ndf channels; batch norm after
the second and third; leaky ReLU 0.2), then two linear outputs on the flattened 4x4 map: the adversarial
(Wasserstein critic) score and the auxiliary class logits.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from ..errors import ConfigError


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def conditioned_noise(labels: torch.Tensor, nz: int, n_labels: int, generator: torch.Generator | None = None,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
    """z ~ N(0, I) of size ``nz`` whose first ``n_labels`` entries are replaced by the one-hot label (the
    released code's ``generate_noise``). ``noise`` (n, nz) may be given to fix z (sample grids, tests)."""
    if n_labels > nz:
        raise ValueError(f"{n_labels} labels do not fit into a noise vector of size {nz}")
    if noise is None:
        noise = torch.randn(len(labels), nz, generator=generator)
    z = noise.to(labels.device).clone()
    z[:, :n_labels] = 0
    z[torch.arange(len(labels), device=labels.device), labels] = 1
    return z


Norm = Literal["batch", "layer", "none"]
NORMS: tuple[str, ...] = get_args(Norm)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation over (C, H, W) with per-channel scale and bias
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ACDiscriminator(nn.Module):
    """Critic with an auxiliary classifier: ``forward(x) -> (score (n,), logits (n, n_labels))``."""

    def __init__(self, channels: int, n_labels: int, ndf: int = 32, size: int = 32,
                 norm: Norm = "layer") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"discriminator norm {norm!r} is not valid; valid: {', '.join(NORMS)}")
        act = nn.LeakyReLU(0.2)
        self.features = nn.Sequential(
            nn.Conv2d(channels, ndf, 5, 2, 2, bias=False), act,
            nn.Conv2d(ndf, 2 * ndf, 5, 2, 2, bias=False), _norm(norm, 2 * ndf), act,
            nn.Conv2d(2 * ndf, 4 * ndf, 5, 2, 2, bias=False), _norm(norm, 4 * ndf), act,
            nn.Flatten(),
        )
        side = math.ceil(math.ceil(math.ceil(size / 2) / 2) / 2)
        width = 4 * ndf * side * side
        self.adversarial = nn.Linear(width, 1)
        self.auxiliary = nn.Linear(width, n_labels)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.adversarial(h).flatten(), self.auxiliary(h)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The adversarial output alone (for the gradient penalty)."""
        return self.adversarial(self.features(x)).flatten()
