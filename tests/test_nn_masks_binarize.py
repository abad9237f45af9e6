"""The straight-through binariser, the Gumbel-sigmoid gate and real-valued mask initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from forgetless.errors import ConfigError
from forgetless.nn.masks import (
    CCGN_TEMPERATURE,
    PIGGYBACK_INIT,
    PIGGYBACK_THRESHOLD,
    binarize,
    gumbel_sigmoid_gate,
    init_scores,
    logistic_noise,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _sigmoid_grad(x: float, threshold: float, temperature: float) -> float:
    s = 1.0 / (1.0 + math.exp(-(x - threshold) / temperature))
    return s * (1 - s) / temperature


def test_binarize_is_a_hard_threshold_forward():
    x = torch.tensor([-1.0, 0.0, 0.004, 0.005, 0.006, 2.0])
    out = binarize(x, threshold=0.005)
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]  # Piggyback: 1 iff x > threshold
    assert out.dtype == x.dtype


def test_identity_surrogate_passes_the_gradient_straight_through():
    x = torch.tensor([-3.0, 0.1, 7.0], requires_grad=True)
    g = torch.tensor([0.5, -2.0, 3.0])
    binarize(x, 0.0, "identity").backward(g)
    assert torch.equal(x.grad, g)


def test_sigmoid_surrogate_gradient_is_the_sigmoid_derivative():
    x = torch.tensor([-0.5, 0.3, 1.2], dtype=torch.float64, requires_grad=True)
    binarize(x, 0.1, "sigmoid", temperature=0.5).sum().backward()
    expected = [_sigmoid_grad(v, 0.1, 0.5) for v in (-0.5, 0.3, 1.2)]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_bad_surrogate_and_temperature_are_config_errors():
    with pytest.raises(ConfigError, match="surrogate"):
        binarize(torch.zeros(2), surrogate="tanh")
    with pytest.raises(ConfigError, match="temperature"):
        binarize(torch.zeros(2), surrogate="sigmoid", temperature=0.0)


def test_gumbel_gate_thresholds_logits_plus_noise_and_backpropagates_the_sigmoid():
    logits = torch.tensor([0.3, -0.2, 1.0, -2.0], dtype=torch.float64, requires_grad=True)
    noise = torch.tensor([-0.5, 0.4, 0.0, 1.5], dtype=torch.float64)
    gates = gumbel_sigmoid_gate(logits, training=True, noise=noise)
    z = (logits + noise).detach()
    assert gates.tolist() == [0.0, 1.0, 1.0, 0.0]  # hard, zero-centred threshold on logits + noise
    gates.sum().backward()
    expected = [_sigmoid_grad(v, 0.0, CCGN_TEMPERATURE) for v in z.tolist()]
    assert logits.grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_gumbel_gate_is_deterministic_in_evaluation():
    logits = torch.tensor([0.3, -0.2, 0.0, 5.0])
    assert gumbel_sigmoid_gate(logits, training=False).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_logistic_noise_has_the_logistic_moments():
    n = logistic_noise((200_000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(float(n.mean())) < 0.03
    assert float(n.var()) == pytest.approx(math.pi**2 / 3, rel=0.03)  # Var of Logistic(0, 1)


def test_gumbel_gate_fires_with_the_sigmoid_probability():
    logits = torch.full((100_000,), 0.8)
    gates = gumbel_sigmoid_gate(logits, generator=torch.Generator().manual_seed(1))
    assert float(gates.mean()) == pytest.approx(1 / (1 + math.exp(-0.8)), abs=0.01)


def test_real_valued_masks_start_all_ones():
    scores = init_scores((5, 7))
    assert torch.all(scores == PIGGYBACK_INIT)
    assert torch.all(binarize(scores, PIGGYBACK_THRESHOLD) == 1)
    uni = init_scores((1000,), "uniform", low=1e-4, high=2e-4, generator=torch.Generator().manual_seed(0))
    assert float(uni.min()) >= 1e-4 and float(uni.max()) < 2e-4
    assert torch.all(binarize(uni, 0.0) == 1)
    with pytest.raises(ConfigError):
        init_scores((2,), "ones")
    with pytest.raises(ConfigError):
        init_scores((2,), "uniform", low=1.0, high=0.5)
