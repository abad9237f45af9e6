"""Variational autoencoder used as a generative memory (DGR baselines, HNET+TIR/HNET+R replay).

Encoder and decoder are separate modules so that a method can run the decoder with weights produced
by a hypernetwork (``torch.func.functional_call(vae.decoder, weights, z)``). The objective is the
one of the hypernetwork paper's Appendix B (and van de Ven & Tolias' DGR): Bernoulli (binary
cross-entropy) reconstruction in pixel space plus the analytic KL of a diagonal Gaussian to N(0, I).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class Encoder(nn.Module):
    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], latent: int) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(sizes[-1], latent)
        self.logvar = nn.Linear(sizes[-1], latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """MLP from the latent code (optionally concatenated with a condition) to pixel logits."""

    def __init__(self, output_shape: Sequence[int], hidden: Sequence[int], latent: int, condition: int = 0) -> None:
        super().__init__()
        self.output_shape = tuple(output_shape)
        sizes = [latent + condition, *reversed(list(hidden))]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], math.prod(output_shape)))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(-1, *self.output_shape)


class VAE(nn.Module):
    """MLP VAE on inputs in [0, 1] (defaults: 400-400 hidden, 100 latent dimensions, as in DGR)."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (400, 400), latent: int = 100,
                 condition: int = 0) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = Encoder(input_shape, hidden, latent)
        self.decoder = Decoder(input_shape, hidden, latent, condition)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar)
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Decoded samples in [0, 1]."""
        device = device or next(self.parameters()).device
        z = torch.randn(n, self.latent, generator=generator).to(device)
        return torch.sigmoid(self.decoder(z))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def vae_loss(recon_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of (BCE reconstruction summed over pixels + KL(q(z|x) || N(0, I)))."""
    target = x.reshape(recon_logits.shape).clamp(0, 1)
    bce = F.binary_cross_entropy_with_logits(recon_logits, target, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (bce + kl).mean()


def require_unit_interval(split, method: str, why: str = "replays a Bernoulli VAE's samples", n: int = 512) -> None:
    """Generative memories model images in [0, 1] (a Bernoulli VAE; a tanh generator after rescaling):
    standardised inputs would be clamped or replayed on the wrong scale. Checks the first ``n`` (transformed)
    training inputs and names the fix."""
    x = split.inputs(slice(0, min(n, len(split))))
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1.0 + 1e-6):
        raise ConfigError(f"{method} {why}, so inputs must lie in [0, 1], got "
                          f"[{float(x.min()):.2f}, {float(x.max()):.2f}]; use --bench normalize=false")
