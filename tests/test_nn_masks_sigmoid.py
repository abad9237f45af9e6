"""HAT-style sigmoid masks: annealing, compensation, clamping, cumulated masks, gradient blocking, the
sparsity regularizer and HAT unit masking of a sequential network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from forgetless.nn import backbones
from forgetless.nn.masks import (
    SigmoidMask,
    UnitMasked,
    anneal,
    block_gradients_,
    clamp_embedding_,
    compensate_embedding_grad_,
    cumulative_max,
    set_scale,
    sparsity_regularizer,
    unit_gradient_factors,
    unit_weight_mask,
    wrap_units,
)
from forgetless.nn.taskwise import select_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_anneal_follows_hat_within_an_epoch():
    smax = 400.0
    assert anneal(smax, 0, 10) == pytest.approx(1 / smax)
    assert anneal(smax, 5, 10) == pytest.approx(1 / smax + (smax - 1 / smax) * 0.5)
    assert anneal(smax, 9, 10) < smax  # HAT's progress i/len(r) never reaches 1 during training


def test_anneal_with_endpoint_is_dgm_eq_3_and_4():
    smax, epochs, batches = 50.0, 5, 8
    for i in range(1, epochs + 1):
        smax_i = anneal(smax, i - 1, epochs, endpoint=True)
        assert smax_i == pytest.approx(1 / smax + (smax - 1 / smax) * (i - 1) / (epochs - 1))
        for b in range(1, batches + 1):
            s = anneal(smax_i, b - 1, batches, endpoint=True)
            assert s == pytest.approx(1 / smax_i + (smax_i - 1 / smax_i) * (b - 1) / (batches - 1))
    assert anneal(smax, epochs - 1, epochs, endpoint=True) == pytest.approx(smax)


def test_embedding_gradient_compensation_matches_hat():
    e = torch.tensor([[-0.3, 0.0, 0.2, 4.0]], requires_grad=True)
    e.grad = torch.ones_like(e)
    s, smax = 2.5, 400.0
    compensate_embedding_grad_(e, s, smax)
    values = (-0.3, 0.0, 0.2, 4.0)
    expected = [smax / s * (math.cosh(max(-50, min(50, s * v))) + 1) / (math.cosh(v) + 1) for v in values]
    assert e.grad[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_clamp_and_cumulated_max():
    e = torch.tensor([-9.0, -1.0, 7.0])
    clamp_embedding_(e, 6.0)
    assert e.tolist() == [-6.0, -1.0, 6.0]
    a = torch.tensor([0.0, 1.0, 0.3])
    b = torch.tensor([0.5, 0.2, 0.3])
    assert cumulative_max(None, a).tolist() == a.tolist()
    assert cumulative_max(a, b).tolist() == pytest.approx([0.5, 1.0, 0.3])


def test_unit_weight_mask_is_min_of_post_and_pre():
    post = torch.tensor([1.0, 0.0, 0.5])
    pre = torch.tensor([0.0, 1.0, 1.0, 0.2])
    m = unit_weight_mask(post, pre, (3, 4))
    assert torch.allclose(m, torch.tensor([[0.0, 1.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.2]]))
    conv = unit_weight_mask(post, pre, (3, 4, 3, 3))
    assert conv.shape == (3, 4, 3, 3) and torch.equal(conv[:, :, 1, 2], m)
    # a flattened feature map: 2 channels x 4 positions feeding 8 inputs
    flat = unit_weight_mask(None, torch.tensor([1.0, 0.0]), (2, 8))
    assert flat.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]] * 2
    assert unit_weight_mask(post, None, (3, 2)).tolist() == [[1, 1], [0, 0], [0.5, 0.5]]


def test_block_gradients_multiplies_by_one_minus_cumulated():
    w = nn.Parameter(torch.ones(2, 2))
    w.grad = torch.full((2, 2), 3.0)
    cumulated = torch.tensor([[1.0, 0.0], [0.25, 0.0]])
    block_gradients_([(w, 1 - cumulated)])
    assert w.grad.tolist() == [[0.0, 3.0], [2.25, 3.0]]


def test_sparsity_regulariser_penalises_only_free_units():
    m1, m2 = torch.tensor([1.0, 0.5]), torch.tensor([0.2, 0.2, 1.0])
    assert float(sparsity_regularizer([m1, m2])) == pytest.approx((1.5 + 1.4) / 5)
    p1, p2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0])
    # units already used (p = 1) are free to reuse: numerator 0.5 + 0.2, denominator 1 + 1
    assert float(sparsity_regularizer([m1, m2], [p1, p2])) == pytest.approx(0.7 / 2)
    m = torch.tensor([0.3, 0.6], requires_grad=True)
    sparsity_regularizer([m], [torch.tensor([1.0, 0.0])]).backward()
    assert m.grad.tolist() == [0.0, 1.0]


def test_sigmoid_mask_and_its_growth():
    mask = SigmoidMask(3, 4, init="zeros")
    assert torch.all(mask(1, 5.0) == 0.5)  # DGM's initialisation: every mask value 0.5
    normal = SigmoidMask(2, (2, 3), generator=torch.Generator().manual_seed(0))
    assert normal.embedding.shape == (2, 2, 3)
    mask.grow(2, value=0.0, frozen_tasks=1)
    assert mask.shape == (6,)
    assert mask.mask(0, 400.0)[4:].tolist() == [0.0, 0.0]  # new units are not the old task's
    assert mask.mask(2, 400.0)[4:].tolist() == [0.5, 0.5]


def test_unit_masking_equals_masking_after_the_relu():
    torch.manual_seed(0)
    layer = nn.Linear(5, 4)
    unit = UnitMasked(layer, n_tasks=2)
    unit.task, unit.s = 1, 3.0
    x = torch.randn(8, 5)
    m = torch.sigmoid(3.0 * unit.mask.embedding[1])
    assert torch.allclose(torch.relu(unit(x)), torch.relu(layer(x)) * m)


def test_wrap_units_and_hat_gradient_factors_on_an_mlp():
    torch.manual_seed(0)
    net = backbones.create("mlp", (1, 4, 4), hidden=(6, 5))
    units = wrap_units(net, n_tasks=3)
    assert [u.n_units for u in units] == [6, 5]
    select_task(net, 2)
    set_scale(net, 7.0)
    assert all(u.task == 2 and u.s == 7.0 for u in units)
    cum = [torch.tensor([1.0, 0, 0, 1, 0, 0]), torch.tensor([0.0, 1, 0, 0, 1])]
    pairs = unit_gradient_factors(units, cum)
    (w1, f1), (b1, fb1), (w2, f2), (b2, fb2) = pairs
    assert w1 is units[0].layer.weight and f1.shape == w1.shape
    assert b1 is units[0].layer.bias and w2 is units[1].layer.weight and b2 is units[1].layer.bias
    assert torch.equal(f1, (1 - cum[0]).view(6, 1).expand(6, 16))  # first layer: inputs unmasked
    assert torch.equal(fb1, 1 - cum[0])
    assert torch.equal(f2, 1 - torch.minimum(cum[1].view(5, 1), cum[0].view(1, 6)))
    assert torch.equal(fb2, 1 - cum[1])
