"""Masked Linear/Conv2d weight transformations and task-specific batch norm in the backbones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from forgetless.nn import backbones
from forgetless.nn.masks import (
    AFFINE_FULL,
    AFFINE_SIMPLE,
    PIGGYBACK,
    MaskedConv2d,
    MaskedLinear,
    WeightTransform,
    freeze_tasks,
    mask_layers,
    masked_copy,
)
from forgetless.nn.taskwise import TaskBatchNorm, select_task, task_norms

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def test_masked_copy_shares_parameters_and_draws_no_random_numbers():
    lin = _layer()
    conv = nn.Conv2d(2, 3, 3, padding=1)
    state = torch.get_rng_state()
    ml, mc = masked_copy(lin), masked_copy(conv)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(ml, MaskedLinear) and isinstance(mc, MaskedConv2d)
    assert ml.weight is lin.weight and ml.bias is lin.bias and mc.weight is conv.weight
    x, xi = torch.randn(5, 4), torch.randn(2, 2, 6, 6)
    assert torch.equal(ml(x), lin(x)) and torch.equal(mc(xi), conv(xi))  # no task: the plain layer


def test_piggyback_transform_is_weight_times_binary_mask():
    ml = masked_copy(_layer(), threshold=5e-3)
    scores = torch.full((3, 4), 1e-2)
    scores[0, 1] = scores[2, 3] = 1e-3  # below the threshold: masked out
    ml.add_task(1, PIGGYBACK, scores=scores)
    mask = (scores > 5e-3).float()
    assert torch.equal(ml.transformed_weight(1), ml.weight * mask)
    ml.task = 1
    x = torch.randn(6, 4)
    assert torch.allclose(ml(x), x @ (ml.weight * mask).T + ml.bias)


def test_affine_transform_matches_eq_2_by_hand():
    ml = masked_copy(_layer())
    scores = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 3)
    state = ml.add_task(2, AFFINE_FULL, scores=scores)
    with torch.no_grad():
        state.k.copy_(torch.tensor([0.7, -0.2, 0.3, 1.5]))
    w, m = ml.weight.detach(), (scores > 0).float()
    expected = 0.7 * w - 0.2 + 0.3 * m + 1.5 * w * m
    assert torch.allclose(ml.transformed_weight(2), expected)


def test_relative_affine_init_starts_at_the_pretrained_weight():
    ml = masked_copy(_layer())
    state = ml.add_task(1, AFFINE_SIMPLE, scores=torch.full((3, 4), 1e-4))
    c = float(ml.weight.detach().abs().mean())
    assert state.coefficients().tolist() == pytest.approx([1.0, -c, c, 0.0])
    assert torch.allclose(ml.transformed_weight(1), ml.weight, atol=1e-7)


def test_gradients_reach_scores_and_learned_ks_only():
    ml = masked_copy(_layer())
    ml.weight.requires_grad_(False)
    transform = WeightTransform(init=(1.0, 0.0, 0.5, 0.0), learn=(False, True, True, False))
    state = ml.add_task(1, transform, scores=torch.full((3, 4), 0.01))
    ml.task = 1
    ml(torch.randn(7, 4)).pow(2).sum().backward()
    assert state.scores.grad is not None and float(state.scores.grad.abs().sum()) > 0
    assert state.k.grad[0] == 0 and state.k.grad[3] == 0  # fixed k's get no gradient
    assert state.k.grad[1] != 0 and state.k.grad[2] != 0
    opt = torch.optim.Adam([state.scores, state.k], lr=0.1)
    opt.step()
    assert state.k[0] == 1.0 and state.k[3] == 0.0


def test_channel_wise_ks_have_one_value_per_output_channel():
    conv = masked_copy(nn.Conv2d(2, 5, 3))
    state = conv.add_task(1, AFFINE_FULL.replace(channel_wise=True), scores=torch.full(conv.weight.shape, 1e-4))
    assert state.k.shape == (4, 5)
    with torch.no_grad():
        state.k[1] = torch.arange(5.0)
        state.k[2] = 0.0
        state.k[0] = 1.0
        state.k[3] = 0.0
    w = conv.transformed_weight(1)
    assert torch.allclose(w - conv.weight, torch.arange(5.0).view(5, 1, 1, 1).expand_as(w))


def test_frozen_masks_are_binary_booleans_and_predictions_do_not_change():
    ml = masked_copy(_layer())
    ml.weight.requires_grad_(False)
    ml.bias.requires_grad_(False)
    scores = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    ml.add_task(1, AFFINE_FULL, scores=scores.clone())
    ml.task = 1
    x = torch.randn(5, 4)
    before = ml(x).detach()
    ml.freeze_task(1)
    state = ml.state(1)
    assert state.scores is None and state.mask.dtype == torch.bool
    assert torch.equal(state.mask, scores > 0)
    assert not any(p.requires_grad for p in state.parameters())
    assert torch.equal(ml(x), before)
    with pytest.raises(ValueError):
        ml.add_task(2, PIGGYBACK, scores=torch.ones(2, 2))


def test_fixed_masks_for_packnet_style_views():
    ml = masked_copy(_layer())
    own = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    ml.add_task(0, mask=own)
    assert torch.equal(ml.transformed_weight(0), ml.weight * own)
    ml.set_mask(0, ~own)
    assert torch.equal(ml.transformed_weight(0), ml.weight * ~own)


def test_mask_layers_converts_a_backbone_in_place():
    torch.manual_seed(0)
    net = backbones.create("simple-cnn", (1, 8, 8), width=6)
    x = torch.randn(3, 1, 8, 8)
    before = net(x)
    layers = mask_layers(net, threshold=5e-3)
    assert len(layers) == 3 and all(isinstance(m, MaskedConv2d) for m in layers)
    assert mask_layers(net) == layers  # idempotent
    assert torch.equal(net(x), before)
    for layer in layers:
        layer.add_task(1, PIGGYBACK, scores=torch.full(layer.weight.shape, 1e-2))
    select_task(net, 1)
    assert torch.equal(net(x), before)  # the all-ones mask leaves the network as it was
    freeze_tasks(net, 1)
    assert all(layer.state(1).scores is None for layer in layers)


def test_task_batch_norm_keeps_every_task_apart():
    norm = TaskBatchNorm(3, n_tasks=3, dims=1)
    norm.train()
    norm.task = 1
    norm(torch.randn(16, 3) * 5 + 2)
    assert torch.equal(norm.norms[0].running_mean, torch.zeros(3))  # only the active slot's statistics move
    assert not torch.equal(norm.norms[1].running_mean, torch.zeros(3))
    norm.copy_slot(1, 2)
    assert torch.equal(norm.norms[2].running_mean, norm.norms[1].running_mean)
    net = nn.Sequential(nn.Linear(2, 3), norm)
    select_task(net, 2, norm=0)
    assert norm.task == 0
    select_task(net, 2)
    assert norm.task == 2


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("simple-cnn", (1, 8, 8)), ("zenke-cnn", (3, 16, 16)),
                                        ("resnet18", (3, 8, 8)), ("resnet32", (3, 8, 8))])
def test_every_backbone_has_the_task_batch_norm_option(name, shape):
    plain = backbones.create(name, shape, width=4) if name != "mlp" else backbones.create(name, shape, hidden=(5, 5))
    assert not list(task_norms(plain))
    opts = {"width": 4} if name != "mlp" else {"hidden": (5, 5)}
    tbn = backbones.create(name, shape, task_bn=3, **opts)
    norms = list(task_norms(tbn))
    assert norms and all(n.n_tasks == 3 for n in norms)
    plain_bn = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    if name.startswith("resnet"):  # its batch norms become task-specific, one for one
        assert len(norms) == len(plain_bn)
    else:  # one after every linear/conv layer
        assert len(norms) == sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in tbn.modules())
    tbn.train()
    out = tbn(torch.rand(4, *shape))
    select_task(tbn, 2)
    assert tbn(torch.rand(4, *shape)).shape == out.shape


def test_task_batch_norm_option_off_leaves_the_plain_mlp():
    torch.manual_seed(0)
    mlp = backbones.create("mlp", (1, 4, 4), hidden=(6, 5))
    assert [n for n, _ in mlp.named_parameters()] == ["layers.1.weight", "layers.1.bias", "layers.3.weight",
                                                      "layers.3.bias"]
