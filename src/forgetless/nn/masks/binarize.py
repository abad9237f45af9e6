"""Straight-through binarisation: a hard threshold forward, a surrogate derivative backward.

One autograd function serves every binary mask and gate in forgetless:

- :func:`binarize` -- ``h(r) = 1[r > threshold]`` forward; backward the derivative of a strictly increasing
  surrogate ``h~``: ``identity`` (``h~(x) = x``, Hinton's straight-through estimator as used by Piggyback)
  or ``sigmoid`` (``h~(x) = sigmoid((x - threshold) / temperature)``, Mancini et al. 2018, Table 5
  "with Sigmoid"). Mancini et al. (Sec. 3.2) show the sign of the gradient is right either way.
- :func:`gumbel_sigmoid_gate` -- binary gates sampled with logistic (Gumbel-difference) noise, hard threshold
  at 0 forward, sigmoid with temperature backward (CCGN, Abati et al. 2020, Sec. 3.2: tau = 2/3); the
  deterministic threshold ``logits > 0`` in evaluation.
- :func:`init_scores` -- real-valued mask scores that start with the binary mask all ones: Piggyback's
  constant 1e-2 with threshold 5e-3 (``arunmallya/piggyback``: ``mask_scale``, ``DEFAULT_THRESHOLD``), or
  Mancini et al.'s uniform draw in [1e-4, 2e-4] with threshold 0.
"""

from __future__ import annotations

from typing import Literal

import torch

from ...distributed import per_sample_noise
from ...errors import ConfigError, choices

Surrogate = Literal["identity", "sigmoid"]
SURROGATES: tuple[str, ...] = ("identity", "sigmoid")

PIGGYBACK_THRESHOLD = 5e-3  # arunmallya/piggyback, modnets/layers.py DEFAULT_THRESHOLD
PIGGYBACK_INIT = 1e-2  # arunmallya/piggyback, --mask_scale (mask_init '1s')
CCGN_TEMPERATURE = 2.0 / 3.0  # Abati et al. (2020), Sec. 3.2


def check_surrogate(surrogate: str) -> None:
    if surrogate not in SURROGATES:
        raise ConfigError(f"surrogate={surrogate!r} is not valid; valid: {choices(SURROGATES)}")


class _StraightThrough(torch.autograd.Function):
    """Forward: ``1[x > threshold]``. Backward: ``grad`` (identity) or ``grad * sigmoid'(z) / T`` with
    ``z = (x - threshold) / T`` (sigmoid)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float, surrogate: str, temperature: float) -> torch.Tensor:
        ctx.surrogate, ctx.threshold, ctx.temperature = surrogate, threshold, temperature
        if surrogate == "sigmoid":
            ctx.save_for_backward(x)
        # Comparing straight into a float buffer is ~5x faster than comparing to bool and converting.
        return torch.gt(x, threshold, out=torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.surrogate == "identity":
            return grad, None, None, None
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid((x - ctx.threshold) / ctx.temperature)
        return grad * sig * (1 - sig) / ctx.temperature, None, None, None


def binarize(scores: torch.Tensor, threshold: float = 0.0, surrogate: Surrogate = "identity",
             temperature: float = 1.0) -> torch.Tensor:
    """Binary {0, 1} tensor ``scores > threshold`` (same dtype) with a straight-through surrogate gradient."""
    check_surrogate(surrogate)
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    return _StraightThrough.apply(scores, float(threshold), surrogate, float(temperature))


def logistic_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``log u - log(1 - u)``, u ~ U(0, 1): the difference of two Gumbel(0, 1) draws, i.e. the noise of a
    binary Gumbel-softmax (Jang et al., 2017; Maddison et al., 2017)."""
    u = torch.rand(shape, generator=generator, dtype=dtype).clamp_(1e-6, 1 - 1e-6)
    noise = torch.log(u) - torch.log1p(-u)
    return noise if device is None else noise.to(device)


def gumbel_sigmoid_gate(logits: torch.Tensor, temperature: float = CCGN_TEMPERATURE, training: bool = True,
                        generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Binary gates from ``logits`` (log-odds of 'on').

    Training: ``1[logits + n > 0]`` with logistic noise ``n`` (or the given ``noise``), gradient of
    ``sigmoid((logits + n) / temperature)``. Evaluation: ``1[logits > 0]``, no noise, no gradient needed.
    """
    if not training:
        return (logits > 0).to(logits.dtype)
    if noise is None:  # data-parallel: the global batch's noise, this rank's rows (distributed.per_sample_noise)
        noise = per_sample_noise(logits.shape, lambda shape: logistic_noise(shape, generator, logits.device,
                                                                            logits.dtype))
    return binarize(logits + noise, 0.0, "sigmoid", temperature)


def init_scores(shape: torch.Size | tuple[int, ...], init: Literal["constant", "uniform"] = "constant",
                value: float = PIGGYBACK_INIT, low: float = 1e-4, high: float = 2e-4,
                generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Real-valued mask scores: ``constant`` (Piggyback: every entry ``value``) or ``uniform`` in
    [``low``, ``high``) (Mancini et al., Sec. 4). Choose them above the threshold so the mask starts all ones."""
    if init == "constant":
        out = torch.full(tuple(shape), float(value))
    elif init == "uniform":
        if not high > low:
            raise ConfigError(f"uniform mask init needs high > low, got [{low}, {high}]")
        out = torch.rand(tuple(shape), generator=generator) * (high - low) + low
    else:
        raise ConfigError(f"mask init {init!r} is not valid; valid: constant, uniform")
    return out if device is None else out.to(device)
