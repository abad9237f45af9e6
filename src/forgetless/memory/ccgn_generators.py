"""Unconditional WGAN-GP generators, one per task (CCGN's generative memory; Abati et al. 2020, supplementary
Sec. 2 and Table 9), built on the shared WGAN-GP objective of :mod:`forgetless.memory.wgan_gp`.

Architectures (Table 9):

- ``mnist`` (28x28x1): generator Linear(128, 4096), ReLU, reshape (256, 4, 4), ConvTranspose(256, 128, 5),
  ReLU, ConvTranspose(128, 64, 5), ReLU, ConvTranspose(64, 1, 8, stride 2), Sigmoid; critic Conv(1, 64, 5, s2),
  ReLU, Conv(64, 128, 5, s2), ReLU, Conv(128, 256, 5, s2), ReLU, Linear(4096, 1). The table's shapes only
  close (4096 = 256*4*4 features, a 28x28 output) with the WGAN-GP reference MNIST model's choices, which we
  therefore follow: padding 2 in the critic's convolutions, and the 8x8 map after the first transposed
  convolution cropped to 7x7 (4 -> 8 -> 7 -> 11 -> 28). The table's third critic row reads Conv2d(64, 128),
  a typo for Conv2d(128, 256) (the Linear(4096, 1) needs 256 channels).
- ``rgb32`` (32x32x3; SVHN, CIFAR-10, ImageNet-50): generator Linear(128, 8192), BN, ReLU, reshape (512, 4, 4),
  ConvTranspose(512, 256, 2, s2), BN, ReLU, ConvTranspose(256, 128, 2, s2), BN, ReLU,
  ConvTranspose(128, 3, 2, s2), Tanh; critic Conv(3, 128, 3, s2), LeakyReLU(0.01), Conv(128, 256, 3, s2),
  LeakyReLU, Conv(256, 512, 3, s2), LeakyReLU, Linear(8192, 1). Stride 2 (and padding 1 in the critic) in
  every layer is what makes 4 -> 32 and 32 -> 4 (the table prints the stride only on the last layer).

Inputs are in [0, 1] for MNIST (Sigmoid) and mapped to [-1, 1] otherwise (Tanh), as in the supplementary;
:meth:`TaskGenerator.sample` always returns images in [0, 1], the range of un-normalised model inputs.
Optimisation: Adam lr 1e-4, betas (0.5, 0.9), batch 64, 5 critic steps per generator step, penalty 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .wgan_gp import critic_loss, generator_loss, gradient_penalty

LATENT = 128


class _MnistGenerator(nn.Module):
    def __init__(self, latent: int = LATENT, dim: int = 64) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent, 4 * 4 * 4 * dim), nn.ReLU())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * dim, 2 * dim, 5), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * dim, dim, 5), nn.ReLU())
        self.out = nn.ConvTranspose2d(dim, 1, 8, stride=2)
        self.dim = dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 4 * self.dim, 4, 4)
        h = self.up1(h)[:, :, :7, :7]
        return torch.sigmoid(self.out(self.up2(h)))


def _mnist_critic(dim: int = 64) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, dim, 5, 2, 2), nn.ReLU(), nn.Conv2d(dim, 2 * dim, 5, 2, 2), nn.ReLU(),
                         nn.Conv2d(2 * dim, 4 * dim, 5, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4 * dim, 1))


class _RGBGenerator(nn.Module):
    def __init__(self, channels: int = 3, latent: int = LATENT) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent, 8192), nn.BatchNorm1d(8192), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(512, 256, 2, 2), nn.BatchNorm2d(256), nn.ReLU(),
                                nn.ConvTranspose2d(256, 128, 2, 2), nn.BatchNorm2d(128), nn.ReLU(),
                                nn.ConvTranspose2d(128, channels, 2, 2), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 512, 4, 4))


def _rgb_critic(channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 128, 3, 2, 1), nn.LeakyReLU(0.01), nn.Conv2d(128, 256, 3, 2, 1),
                         nn.LeakyReLU(0.01), nn.Conv2d(256, 512, 3, 2, 1), nn.LeakyReLU(0.01), nn.Flatten(),
                         nn.Linear(8192, 1))


def architecture_for(shape: Sequence[int]) -> str:
    shape = tuple(shape)
    if shape == (1, 28, 28):
        return "mnist"
    if len(shape) == 3 and shape[1:] == (32, 32):
        return "rgb32"
    raise ConfigError(f"no WGAN architecture (Table 9) for inputs of shape {shape}; valid: 1x28x28, Cx32x32")


@dataclass
class WGANConfig:
    iterations: int = 200_000  # generator steps (the paper's 2e5 "total iterations")
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    critic_steps: int = 5
    gp_weight: float = 10.0
    latent: int = LATENT


class TaskGenerator(nn.Module):
    """One task's generator (the critic is only needed while training and is dropped afterwards)."""

    def __init__(self, shape: Sequence[int], latent: int = LATENT) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.arch = architecture_for(self.shape)
        self.latent = latent
        self.net = _MnistGenerator(latent) if self.arch == "mnist" else _RGBGenerator(self.shape[0], latent)

    def new_critic(self) -> nn.Module:
        return _mnist_critic() if self.arch == "mnist" else _rgb_critic(self.shape[0])

    def to_gan_range(self, x01: torch.Tensor) -> torch.Tensor:
        return x01 if self.arch == "mnist" else x01 * 2 - 1

    def from_gan_range(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.arch == "mnist" else (x + 1) / 2

    def fit(self, images01: torch.Tensor, config: WGANConfig, generator: torch.Generator | None = None,
            log=None) -> list[float]:
        """Train on ``images01`` (N, C, H, W) in [0, 1]: ``config.iterations`` generator steps, each after
        ``critic_steps`` critic steps on fresh real batches. Returns the critic losses, one per generator step."""
        if len(images01) == 0:
            raise ConfigError("cannot train a generator on an empty task")
        device = images01.device
        critic = self.new_critic().to(device)
        opt_g = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=tuple(config.betas))
        opt_d = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=tuple(config.betas))
        self.train()
        n, bs = len(images01), config.batch_size
        history = []
        for step in range(config.iterations):
            for _ in range(config.critic_steps):
                idx = torch.randint(n, (bs,), generator=generator).to(device)
                real = self.to_gan_range(images01[idx])
                with torch.no_grad():
                    fake = self.net(self._noise(bs, generator, device))
                loss_d = critic_loss(critic(real).squeeze(1), critic(fake).squeeze(1))
                loss_d = loss_d + gradient_penalty(lambda v: critic(v).squeeze(1), real, fake,
                                                   weight=config.gp_weight)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            for p in critic.parameters():
                p.requires_grad_(False)
            loss_g = generator_loss(critic(self.net(self._noise(bs, generator, device))).squeeze(1))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for p in critic.parameters():
                p.requires_grad_(True)
            history.append(float(loss_d.detach()))
            if log is not None and (step % 100 == 0 or step == config.iterations - 1):
                log(gan_step=step, critic_loss=float(loss_d.detach()), generator_loss=float(loss_g.detach()))
        self.eval()
        return history

    def _noise(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        return torch.randn(n, self.latent, generator=generator).to(device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` images in [0, 1] (evaluation mode: batch norms use their running statistics)."""
        was = self.training
        self.eval()
        device = device if device is not None else next(self.parameters()).device
        out = self.from_gan_range(self.net(self._noise(n, generator, device)))
        self.train(was)
        return out.clamp_(0, 1)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def per_task_counts(n: int, n_tasks: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """How many of ``n`` samples each of ``n_tasks`` tasks gets when each sample's task is uniform."""
    which = torch.randint(n_tasks, (n,), generator=generator)
    return torch.bincount(which, minlength=n_tasks)


__all__ = ["LATENT", "TaskGenerator", "WGANConfig", "architecture_for", "per_task_counts"]
