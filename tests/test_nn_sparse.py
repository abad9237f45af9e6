"""Sparse-connectivity layers (forgetless.nn.sparse): allocation, drop/grow, importance, reservation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import ConfigError
from forgetless.nn.backbones import MLP, ZenkeCNN
from forgetless.nn.sparse import SparseConv2d, SparseLinear, SparseNetwork, sparsify, top_k


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


def test_new_layer_has_no_connections_and_outputs_its_bias():
    layer = SparseLinear(6, 4)
    assert layer.connections() == 0 and not layer.owner.any()
    with torch.no_grad():
        layer.bias.fill_(0.5)
    out = layer(torch.randn(3, 6))
    assert torch.equal(out, torch.full((3, 4), 0.5))


def test_allocate_places_n_random_units_inside_the_block_with_glorot_values():
    layer = SparseLinear(20, 10)
    rows, cols = torch.zeros(10, dtype=torch.bool), torch.zeros(20, dtype=torch.bool)
    rows[[1, 3, 5]] = True
    cols[2:12] = True
    placed = layer.allocate(0, rows, cols, 17, gen())
    units = layer.task_units(0)
    assert placed == 17 and int(units.sum()) == 17
    assert not units[~rows].any() and not units[:, ~cols].any()
    bound = math.sqrt(6 / (20 + 10))
    w = layer.effective_weight()
    assert (w[units].abs() <= bound).all() and (w[units] != 0).all()
    assert (w[~units] == 0).all() and layer.values.shape == (17,)
    # a second task only gets empty positions, and a request larger than the space left is capped
    placed = layer.allocate(1, rows, cols, 100, gen(1))
    assert placed == 30 - 17
    assert not (layer.task_units(0) & layer.task_units(1)).any()


def test_only_current_units_learn_and_old_values_survive_momentum_and_weight_decay():
    layer = SparseLinear(8, 5)
    layer.allocate(0, ones(5), ones(8), 12, gen())
    layer.consolidate()
    frozen = layer.frozen.clone()
    layer.allocate(1, ones(5), ones(8), 10, gen(1))
    current = layer.current_units()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(16, 8)).pow(2).sum().backward()
        assert layer.values.grad.shape == (10,)  # only the current task's units are parameters
        opt.step()
    assert torch.equal(layer.frozen, frozen)
    moved = layer.effective_weight()
    assert torch.equal(moved[~current], frozen[~current])
    layer.consolidate()
    assert torch.equal(layer.frozen[layer.task_units(0)], frozen[layer.task_units(0)])
    assert torch.equal(layer.frozen[current], moved[current])
    assert layer.values.numel() == 0 and not layer.current_units().any()


def test_effective_weight_hides_frozen_units_on_request():
    layer = SparseLinear(4, 3)
    layer.allocate(0, ones(3), ones(4), 5, gen())
    layer.consolidate()
    layer.allocate(1, ones(3), ones(4), 4, gen(1))
    x = torch.randn(2, 4)
    shown = layer(x)
    hidden = layer(x, show_frozen=False)
    current = torch.zeros(3, 4)
    current[layer.current_units()] = layer.values.detach()[torch.argsort(layer.index)]
    assert torch.allclose(shown, F.linear(x, layer.frozen + current, layer.bias))
    assert torch.allclose(hidden, F.linear(x, current, layer.bias))


def test_drop_removes_the_least_important_fraction_of_the_current_task():
    layer = SparseLinear(5, 4)
    layer.allocate(0, ones(4), ones(5), 10, gen())
    units = layer.task_units(0)
    imp = torch.zeros(4, 5)
    imp[units] = torch.arange(1, 11, dtype=torch.float)  # importance 1..10 in grid order
    layer.importance.copy_(imp)
    dropped = layer.drop(0.3, gen())
    expected = units & (imp <= 3)
    assert torch.equal(dropped, expected)
    assert layer.connections(0) == 7 and (layer.effective_weight()[dropped] == 0).all()
    assert not layer.current_units()[dropped].any() and len(layer.index) == 7


def test_grow_adds_zero_weights_where_the_neuron_importance_product_is_highest():
    layer = SparseLinear(3, 3)
    layer.owner[0, 0] = 5  # an old task's connection: never taken
    a_in, a_out = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 1.0, 2.0])
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 2] = True  # the highest product (3 * 3) was just dropped: not regrown
    grown = layer.grow(0, 3, a_in, a_out, ones(3), ones(3), exclude, gen())
    # G = a_out a_in^T; free positions by value: (0,1)=6, (2,2)=6, (2,1)=4, (1,2)=3, ...
    assert grown == 3
    mask = layer.task_units(0)
    assert mask[0, 1] and mask[2, 2] and mask[2, 1] and int(mask.sum()) == 3
    assert (layer.effective_weight()[mask] == 0).all() and layer.current_units()[mask].all()


def test_omega_accumulates_grad_times_weight_change():
    layer = SparseLinear(6, 4)
    layer.allocate(0, ones(4), ones(6), 12, gen())
    x = torch.randn(8, 6, generator=gen(1))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    total = torch.zeros(4, 6)
    for _ in range(2):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        dense_grad = torch.zeros(4, 6)
        dense_grad.view(-1)[layer.index] = layer.values.grad
        before = layer.values.detach().clone()
        opt.step()
        layer.accumulate_importance(before)
        total += 0.1 * dense_grad**2  # plain SGD: |g * dw| = lr * g^2
    assert torch.allclose(layer.importance, total, atol=1e-7)
    assert (layer.importance[~layer.current_units()] == 0).all()


def test_conv_units_are_whole_kernels():
    conv = SparseConv2d(3, 4, 3, padding=1)
    conv.allocate(0, ones(4), ones(3), 5, gen())
    w = conv.effective_weight()
    per_kernel = (w != 0).flatten(2).sum(2)
    assert set(per_kernel.unique().tolist()) <= {0, 9}
    assert int((per_kernel == 9).sum()) == 5 == conv.connections(0) and conv.values.shape == (5, 3, 3)
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(conv(x), F.conv2d(x, w, conv.bias, padding=1))
    conv.importance.copy_(torch.rand_like(conv.importance))
    unit = conv.unit_importance()
    assert torch.allclose(unit, conv.importance.sum((2, 3)) * conv.current_units())
    dropped = conv.drop(0.4, gen())
    assert int(dropped.sum()) == 2 and (conv.effective_weight()[dropped] == 0).all()


def test_top_k_breaks_ties_at_random():
    scores = torch.zeros(100)
    picks = {tuple(sorted(top_k(scores, 5, gen(s)).tolist())) for s in range(5)}
    assert len(picks) > 1
    assert top_k(torch.tensor([0.0, 5.0, 1.0, 5.0]), 2, gen()).sort().values.tolist() == [1, 3]


def test_sparsify_refuses_normalisation_layers():
    with pytest.raises(ConfigError, match="normalisation"):
        sparsify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


# ---------------------------------------------------------------------------------- network level

def small_net(hidden=(6, 5), n_in=7, n_out=4) -> SparseNetwork:
    return SparseNetwork(MLP((n_in,), hidden), hidden[-1], n_out)


def test_network_allocation_selects_free_neurons_and_sets_bias_trainability():
    net = small_net()
    assert sum(net.connections()) == 0
    placed = net.allocate_task(0, [0, 1], [3, 2], [8, 4, 3], gen())
    assert placed == [8, 4, 3]
    sel1, sel2 = net.selected(1), net.selected(2)
    assert int(sel1.sum()) == 3 and int(sel2.sum()) == 2
    l0, l1, head = net.layers
    assert not l0.task_units(0)[~sel1].any()
    assert not l1.task_units(0)[~sel2].any() and not l1.task_units(0)[:, ~sel1].any()
    assert not head.task_units(0)[2:].any() and not head.task_units(0)[:, ~sel2].any()
    assert head.bias_free.tolist() == [True, True, False, False]


def test_reserved_neurons_never_get_connections_of_later_tasks():
    net = SparseNetwork(MLP((30,), (20, 20)), 20, 6)
    net.allocate_task(0, [0, 1], [10, 10], [120, 60, 10], gen())
    l0 = net.layers[0]
    imp = torch.zeros_like(l0.importance)
    imp[l0.current_units()] = torch.rand(int(l0.current_units().sum()), generator=gen(3))
    l0.importance.copy_(imp)
    a = net.neuron_importance(1)
    reserved = net.reserve([4, 4], gen())[0]
    candidates = net.selected(1)
    assert int(reserved.sum()) == 4 and not reserved[~candidates].any()
    assert a[reserved].min() >= a[candidates & ~reserved].max()  # the 4 most important selected neurons
    assert int(net.free(1).sum()) == 16
    net.end_task()
    bias_before = net.layers[0].effective_bias()[reserved].clone()
    for t in (1, 2):
        net.allocate_task(t, [2 * t, 2 * t + 1], [None, None], [200, 200, 20], gen(t))
        assert not net.layers[0].task_units(t)[reserved].any()  # nothing goes in
        assert not net.layers[1].task_units(t)[:, reserved].any()  # nor comes out for a new task
        net.rewire(0.5, gen(t))
        assert not net.layers[0].task_units(t)[reserved].any()
        net.end_task()
    assert torch.equal(net.layers[0].effective_bias()[reserved], bias_before)


def test_neuron_importance_is_eq4():
    net = small_net(hidden=(3, 2), n_in=4, n_out=2)
    net.allocate_task(0, [0, 1], [None, None], [12, 6, 4], gen())  # dense blocks
    l0, l1, _ = net.layers
    l0.importance.copy_(torch.arange(12, dtype=torch.float).view(3, 4))
    l1.importance.copy_(torch.arange(6, dtype=torch.float).view(2, 3))
    assert net.neuron_importance(0).tolist() == [12, 15, 18, 21]  # inputs: outgoing connections
    assert net.neuron_importance(1).tolist() == [6, 22, 38]  # hidden: ingoing connections
    assert net.neuron_importance(2).tolist() == [3, 12]


def test_rewire_keeps_the_connection_count_and_stays_in_the_selected_block():
    net = SparseNetwork(MLP((50,), (30, 30)), 30, 4)
    net.allocate_task(0, [0, 1], [10, 10], [200, 40, 10], gen())
    for layer in net.layers:
        layer.importance.copy_(torch.rand(layer.importance.shape, generator=gen(5)))
    counts = [layer.connections(0) for layer in net.layers]
    changes = net.rewire(0.2, gen())
    assert [d for d, _, _ in changes] == [40, 8] and [g for _, g, _ in changes] == [40, 8]
    assert [layer.connections(0) for layer in net.layers] == counts
    l0, l1, _ = net.layers
    assert not l0.task_units(0)[~net.selected(1)].any()
    assert not l1.task_units(0)[:, ~net.selected(1)].any() and not l1.task_units(0)[~net.selected(2)].any()


def test_cnn_network_maps_feature_maps_onto_the_flattened_features():
    net = SparseNetwork(ZenkeCNN((3, 16, 16), channels=(4, 4, 8, 8), fc=16), 16, 6)
    assert net.sizes == [3, 4, 4, 8, 8, 16, 6]
    assert net.spread == [1, 1, 1, 1, 4, 1]  # 8 maps of 2 x 2 feed the first linear layer
    net.allocate_task(0, [0, 1], [None] * 5, [5, 8, 16, 32, 60, 20], gen())
    net.reserve([1, 1, 2, 2, 4], gen())
    net.end_task()
    reserved_maps = ~net.free(4)
    net.allocate_task(1, [2, 3], [None] * 5, [5, 8, 16, 32, 60, 20], gen(1))
    fc = net.layers[4]
    cols = reserved_maps.repeat_interleave(4)
    assert not fc.task_units(1)[:, cols].any()  # features of reserved maps feed no new connection
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 6)


def test_a_backbone_that_is_not_a_chain_is_refused():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(10, 7)
            self.b = nn.Linear(5, 3)

    with pytest.raises(ConfigError, match="feed-forward chain"):
        SparseNetwork(Odd(), 3, 2)
