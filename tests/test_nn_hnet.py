"""Building blocks of the hypernetwork methods: hypernetworks, functional targets, the Eq. 2 regularizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from forgetless.errors import ConfigError
from forgetless.nn import backbones
from forgetless.nn.hnet import (
    ChunkedHyperNetwork,
    FullHyperNetwork,
    OutputRegularizer,
    TargetNetwork,
    build,
    optimizer_lookahead,
)


def _mlp_target(shape=(1, 28, 28), hidden=(400, 400), n_out=10) -> nn.Module:
    body = backbones.create("mlp", shape, hidden=hidden)
    return nn.Sequential(body, nn.Linear(body.out_features, n_out))


# ------------------------------------------------------------------------------------------ hypernetworks

def test_split_mnist_hypernetwork_has_the_papers_parameter_count():
    # Appendix C: 465,672 = 465,192 network weights + 480 task-embedding weights, for a 478,410-weight target.
    target = TargetNetwork(_mlp_target())
    assert target.n_weights == 478_410
    h = build(target.n_weights, 96, (10, 10), 42000, 96, "elu")
    for _ in range(5):
        h.add_embedding()
    assert isinstance(h, ChunkedHyperNetwork) and h.n_chunks == 12
    assert h.n_theta() == 465_192
    assert h.n_theta() + 5 * 96 == 465_672


def test_permuted_cl2_hypernetwork_has_the_papers_parameter_count():
    # Appendix C: 2,029,931 = 2,029,691 network weights + 240 embedding weights; target 2,036,010 (CL2).
    target = TargetNetwork(_mlp_target((1, 32, 32), (1000, 1000), 10))
    assert target.n_weights == 2_036_010
    h = build(target.n_weights, 24, (25, 25), 78000, 8, "elu")
    assert h.n_theta() == 2_029_691


def test_chunked_output_is_the_concatenation_of_each_chunk_truncated():
    torch.manual_seed(0)
    h = ChunkedHyperNetwork(1000, 6, 96, 5, (7, 4), "elu")
    embs = torch.randn(3, 6)
    out = h(embs)
    assert out.shape == (3, 1000) and h.n_chunks == 11
    w0, b0, w1, b1, v = h.theta()[1:]  # v = [W_out; b_out]
    for t in range(3):
        chunks = []
        for c in h.chunk_embeddings:  # the naive loop over chunks, on the concatenated input [e, c]
            x = torch.cat([embs[t], c])
            z = F.elu(F.elu(x @ w0 + b0) @ w1 + b1)
            chunks.append(z @ v[:-1] + v[-1])
        torch.testing.assert_close(out[t], torch.cat(chunks)[:1000])
    torch.testing.assert_close(h(embs[1]), out[1])  # a single embedding gives the same vector
    assert h(embs, truncate=False).shape == (3, 11 * 96)


def test_full_hypernetwork_and_linear_chunked_variant():
    h = FullHyperNetwork(141, 2, (10, 10), "sigmoid")  # the toy regression's: 141 target weights
    assert h(torch.randn(2)).shape == (141,)
    assert isinstance(build(141, 2, (10, 10), None, 8, "sigmoid"), FullHyperNetwork)
    g = ChunkedHyperNetwork(100, 4, 30, 3, (), "relu")  # no hidden layer: a linear map of [e, c]
    assert g(torch.randn(4)).shape == (100,)


def test_embeddings_are_added_trainable_and_frozen_on_request():
    h = ChunkedHyperNetwork(50, 4, 20, 3, (5,), "relu")
    e0 = h.add_embedding(torch.Generator().manual_seed(0))
    assert e0.requires_grad and h.n_tasks == 1
    h.freeze_embeddings()
    e1 = h.add_embedding()
    assert not h.embeddings[0].requires_grad and e1.requires_grad
    assert h.embedding_matrix().shape == (2, 4)


def test_bad_hypernetwork_options_are_config_errors():
    with pytest.raises(ConfigError, match="activation"):
        ChunkedHyperNetwork(10, 2, 5, 2, (3,), "swish")
    with pytest.raises(ConfigError):
        ChunkedHyperNetwork(10, 2, 0, 2, (3,), "relu")


# ------------------------------------------------------------------------------------------------ targets

@pytest.mark.parametrize("name,shape", [("mlp", (1, 28, 28)), ("zenke-cnn", (3, 32, 32)), ("resnet32", (3, 32, 32))])
def test_unmodified_backbones_run_with_external_weights(name, shape):
    torch.manual_seed(0)
    body = backbones.create(name, shape)
    module = nn.Sequential(body, nn.Linear(body.out_features, 5)).eval()
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = module(x)
    n_params = flat.numel()
    target = TargetNetwork(module)
    assert target.n_weights == n_params
    assert sum(p.numel() for p in target.parameters()) == 0  # the module keeps no weights of its own
    with torch.no_grad():
        torch.testing.assert_close(target(x, flat), expected)
        padded = torch.cat([flat, torch.randn(7)])  # an untruncated hypernetwork output works too
        torch.testing.assert_close(target(x, padded), expected)
    w = flat.clone().requires_grad_()
    target(x, w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_batchnorm_statistics_are_checkpointed_per_task():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    target = TargetNetwork(module)
    w = torch.randn(target.n_weights)
    target.train()
    target(torch.randn(64, 4) + 3.0, w)  # task 0 data: running mean moves towards its statistics
    target.checkpoint_buffers(0)
    stats0 = target.task_buffers[0]["1.running_mean"].clone()
    target(torch.randn(64, 4) - 5.0, w)  # task 1 moves the live statistics elsewhere
    target.checkpoint_buffers(1)
    target.eval()
    x = torch.randn(5, 4)
    with torch.no_grad():
        out0, out1 = target(x, w, task=0), target(x, w, task=1)
        params = target.unflatten(w)
        ref0 = functional_call(module, {**params, **target.task_buffers[0]}, (x,))
    torch.testing.assert_close(out0, ref0)
    assert not torch.allclose(out0, out1)
    assert torch.equal(target.task_buffers[0]["1.running_mean"], stats0)
    assert target.buffer_bytes() > 0


# -------------------------------------------------------------------------------------------- regularizer

def _hnets():
    return [
        ChunkedHyperNetwork(1000, 8, 96, 5, (7, 6), "elu"),  # last chunk truncated (1000 = 10 * 96 + 40)
        ChunkedHyperNetwork(960, 8, 96, 5, (), "elu"),  # exact chunks, no hidden layer
        FullHyperNetwork(141, 2, (10, 10), "sigmoid"),
    ]


def _trained_past(h, n_past=3):
    for _ in range(n_past):
        h.add_embedding()
    h.freeze_embeddings()
    return h


@pytest.mark.parametrize("index", [0, 1, 2])
def test_penalty_is_eq2_exactly(index):
    torch.manual_seed(index)
    h = _trained_past(_hnets()[index].double())
    targets = h(h.embedding_matrix()).detach()
    reg = OutputRegularizer(beta=1.0)
    reg.begin_task(h)
    torch.testing.assert_close(reg.targets(h), targets)
    theta = [p.detach() + 0.01 * torch.randn_like(p) for p in h.theta()]
    for sel in (None, torch.tensor([2, 0])):
        embs = h.embedding_matrix() if sel is None else h.embedding_matrix()[sel]
        tg = targets if sel is None else targets[sel]
        direct = (h(embs, theta) - tg).pow(2).sum() / len(embs)
        torch.testing.assert_close(reg.penalty(h, theta, sel), direct)
    assert reg.penalty(h).item() == pytest.approx(0.0, abs=1e-9)  # unchanged hypernetwork: no penalty


@pytest.mark.parametrize("index", [0, 1, 2])
def test_backward_adds_the_gradient_of_eq2_at_the_lookahead(index):
    torch.manual_seed(10 + index)
    h = _trained_past(_hnets()[index].double())
    targets = h(h.embedding_matrix()).detach()
    reg = OutputRegularizer(beta=0.3)
    reg.begin_task(h)
    emb = h.add_embedding()
    opt = torch.optim.Adam(h.theta(), lr=1e-2)
    for _ in range(3):  # the first step has no Adam state yet, the next ones do
        opt.zero_grad()
        h(emb).pow(2).mean().backward()
        task_grads = [p.grad.clone() for p in h.theta()]
        shifted = optimizer_lookahead(opt, h.theta())
        theta = [p + (s - p.detach()) for p, s in zip(h.theta(), shifted, strict=True)]
        direct = (h(h.embedding_matrix()[:3], theta) - targets).pow(2).sum() / 3
        reg_grads = torch.autograd.grad(0.3 * direct, h.theta(), allow_unused=True)
        value = reg.backward(h, opt)
        assert value.item() == pytest.approx(direct.item(), rel=1e-9)
        for p, g0, g1 in zip(h.theta(), task_grads, reg_grads, strict=True):
            torch.testing.assert_close(p.grad, g0 + (0 if g1 is None else g1))
        assert emb.grad is not None  # the current embedding keeps its task gradient only
        opt.step()


def test_lookahead_is_the_step_the_optimizer_takes():
    torch.manual_seed(0)
    h = ChunkedHyperNetwork(300, 4, 64, 3, (5,), "elu").double()
    e = h.add_embedding()
    for opt in (torch.optim.Adam(h.theta(), lr=1e-2, weight_decay=0.01),
                torch.optim.SGD(h.theta(), lr=1e-2, momentum=0.9)):
        for _ in range(3):
            opt.zero_grad()
            h(e).pow(2).mean().backward()
            before = [p.detach().clone() for p in h.theta()]
            predicted = optimizer_lookahead(opt, h.theta())
            opt.step()
            for p, q, b in zip(h.theta(), predicted, before, strict=True):
                torch.testing.assert_close(q, p.detach())
                assert not torch.equal(q, b)


def test_stochastic_regulariser_uses_at_most_k_past_tasks():
    h = _trained_past(ChunkedHyperNetwork(200, 4, 64, 3, (5,), "elu").double(), n_past=6)
    reg = OutputRegularizer(beta=1.0, max_tasks=2)
    reg.begin_task(h)
    g = torch.Generator().manual_seed(0)
    picks = {tuple(sorted(reg.select(g).tolist())) for _ in range(30)}
    assert all(len(p) == 2 for p in picks) and len(picks) > 3  # two distinct tasks, different ones each step
    assert OutputRegularizer(1.0, max_tasks=10).select is not None
    reg_all = OutputRegularizer(beta=1.0, max_tasks=10)
    reg_all.begin_task(h)
    assert reg_all.select(g) is None


def test_no_past_task_or_zero_beta_means_no_regulariser():
    h = ChunkedHyperNetwork(200, 4, 64, 3, (5,), "elu")
    reg = OutputRegularizer(beta=1.0)
    reg.begin_task(h)  # nothing stored yet
    assert not reg.active
    _trained_past(h, 2)
    off = OutputRegularizer(beta=0.0)
    off.begin_task(h)
    opt = torch.optim.Adam(h.theta())
    assert off.backward(h, opt) is None
    reg.begin_task(h)
    assert reg.active
    reg.end_task()
    assert not reg.active and reg.embeddings is None


def test_regulariser_keeps_old_outputs_where_plain_training_moves_them():
    """Learning a new embedding's target with and without Eq. 2: the old task's weights barely move with it."""
    drift = {}
    for beta in (1.0, 0.0):
        torch.manual_seed(0)
        h = ChunkedHyperNetwork(500, 4, 100, 3, (10,), "elu")
        old = _trained_past(h, 1).embeddings[0]
        before = h(old).detach()
        reg = OutputRegularizer(beta=beta)
        reg.begin_task(h)
        e = h.add_embedding()
        goal = torch.randn(500)
        opt = torch.optim.Adam(h.theta(), lr=1e-2)
        opt_e = torch.optim.Adam([e], lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            opt_e.zero_grad()
            (h(e) - goal).pow(2).mean().backward()
            reg.backward(h, opt)
            opt.step()
            opt_e.step()
        assert (h(e) - goal).pow(2).mean() < 0.5  # the new task is learned in both cases
        drift[beta] = ((h(old) - before).norm() / before.norm()).item()
    assert drift[1.0] < 0.05
    assert drift[0.0] > 5 * drift[1.0]


def test_gram_penalty_float32_matches_direct_within_rounding():
    torch.manual_seed(0)
    h = _trained_past(ChunkedHyperNetwork(478_410, 96, 42000, 96, (10, 10), "elu"), 4)
    targets = h(h.embedding_matrix()).detach()
    reg = OutputRegularizer(beta=1.0)
    reg.begin_task(h)
    theta = [p.detach() + 1e-3 * torch.randn_like(p) for p in h.theta()]
    direct = (h(h.embedding_matrix(), theta) - targets).pow(2).sum() / 4
    assert math.isclose(reg.penalty(h, theta).item(), direct.item(), rel_tol=2e-3)
