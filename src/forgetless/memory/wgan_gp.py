"""WGAN-GP objective (Gulrajani et al., 2017), shared by CCGN's per-task generators and DGM's AC-GAN."""

from __future__ import annotations

from collections.abc import Callable

import torch


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     *condition: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """weight * E[(||grad_x critic(x_hat)||_2 - 1)^2] on random interpolates of real and fake samples.

    ``critic`` returns one score per sample (extra outputs, e.g. an auxiliary classifier, must be
    dropped by the caller's wrapper); ``condition`` is passed through unchanged (class labels).
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed, *condition)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return weight * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss (to minimise): E[D(fake)] - E[D(real)]."""
    return fake_scores.mean() - real_scores.mean()


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()
