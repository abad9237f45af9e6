"""Backbones, heads and the shared memory pieces (buffer, VAE objective, gradient penalty)."""

from __future__ import annotations

import pytest
import torch

from forgetless.benchmarks.base import Split
from forgetless.benchmarks.transforms import Compose, ToFloat
from forgetless.errors import ConfigError
from forgetless.memory import VAE, EpisodicBuffer, gradient_penalty, vae_loss
from forgetless.nn import backbones
from forgetless.nn.heads import MultiHead

from conftest import synthetic_benchmark


@pytest.mark.parametrize("name,shape,width", [("mlp", (1, 28, 28), 400), ("simple-cnn", (1, 28, 28), 100),
                                              ("zenke-cnn", (3, 32, 32), 512), ("resnet18", (3, 32, 32), 512),
                                              ("resnet32", (3, 32, 32), 64)])
def test_backbones_shapes(name, shape, width):
    net = backbones.create(name, shape)
    assert net.out_features == width
    assert net(torch.zeros(2, *shape)).shape == (2, width)


def test_backbone_architectures():
    assert backbones.create("mlp", (1, 28, 28), hidden=(1000, 1000)).out_features == 1000
    mlp = backbones.create("mlp", (1, 28, 28))
    assert sum(p.numel() for p in mlp.parameters()) == 784 * 400 + 400 + 400 * 400 + 400
    cnn = backbones.create("simple-cnn", (1, 28, 28))
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [100, 100, 100]
    zenke = backbones.create("zenke-cnn", (3, 32, 32))
    assert [c.out_channels for c in zenke.modules() if isinstance(c, torch.nn.Conv2d)] == [32, 32, 64, 64]
    r32 = backbones.create("resnet32", (3, 32, 32))
    assert sum(isinstance(m, backbones.BasicBlock) for m in r32.modules()) == 15
    with pytest.raises(ConfigError, match="valid: densenet121, mlp, resnet18"):
        backbones.create("vgg", (1, 28, 28))
    with pytest.raises(ConfigError, match="needs image inputs"):
        backbones.create("simple-cnn", (64,))


def test_feature_width_of_a_user_module():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7))
    assert backbones.feature_width(net, (3, 4)) == 7


def test_multihead_writes_each_task_into_its_labels():
    head = MultiHead(4, [[0, 1], [2, 3, 4]], 5)
    f = torch.randn(3, 4)
    one = head(f, task_id=1)
    assert torch.isinf(one[:, :2]).all() and torch.allclose(one[:, 2:], head.heads[1](f))
    both = head(f)
    assert torch.allclose(both[:, :2], head.heads[0](f))
    assert torch.isinf(head(f, upto=0)[:, 2:]).all()


def _split(n, value, task_scale=1.0):
    return Split(torch.full((n, 1, 2, 2), value, dtype=torch.uint8), torch.full((n,), value, dtype=torch.long),
                 Compose(ToFloat((0.0,), (task_scale,))))


def test_buffer_keeps_c_over_t_per_task_and_rebalances():
    buf = EpisodicBuffer(10)
    g = torch.Generator().manual_seed(0)
    buf.add_task(_split(50, 1), 0, g)
    assert [len(s) for s in buf.splits] == [10]
    buf.add_task(_split(50, 2), 1, g)
    assert [len(s) for s in buf.splits] == [5, 5]
    buf.add_task(_split(2, 3), 2, g)
    assert [len(s) for s in buf.splits] == [4, 3, 2] and len(buf) == 9
    assert buf.tasks().tolist() == [0] * 4 + [1] * 3 + [2] * 2


def test_buffer_keeps_the_prefix_of_a_given_priority_order():
    buf = EpisodicBuffer(4)
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10), Compose(ToFloat()))
    buf.add_task(split, 0, order=torch.tensor([7, 3, 9, 1, 0, 2, 4, 5, 6, 8]))
    assert buf.splits[0].y.tolist() == [7, 3, 9, 1]
    buf.add_task(split, 1, order=torch.arange(10))
    assert buf.splits[0].y.tolist() == [7, 3]  # shrinking keeps the most important first


def test_buffer_balanced_sampling_and_per_task_transform():
    buf = EpisodicBuffer(None)
    buf.add_task(_split(90, 1), 0)
    buf.add_task(_split(10, 2, task_scale=0.5), 1)
    x, y, t = buf.sample(4000, torch.Generator().manual_seed(0), balanced=True)
    share = float((t == 1).float().mean())
    assert 0.45 < share < 0.55  # uniform over tasks although task 1 holds 10% of the samples
    assert torch.allclose(x[t == 1], torch.full_like(x[t == 1], 2 / 255 / 0.5))
    assert torch.equal(y, t + 1)
    _, _, t2 = buf.sample(4000, torch.Generator().manual_seed(0))
    assert float((t2 == 1).float().mean()) < 0.15


def test_vae_loss_is_bce_plus_analytic_kl():
    x = torch.rand(3, 1, 2, 2)
    logits = torch.zeros(3, 1, 2, 2)  # p = 0.5 everywhere: BCE = 4 log 2 per sample
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert vae_loss(logits, x, mu, logvar).item() == pytest.approx(4 * torch.log(torch.tensor(2.0)).item())
    mu = torch.ones(3, 5)  # KL = 0.5 * sum(mu^2) = 2.5
    assert vae_loss(logits, x, mu, logvar).item() == pytest.approx(4 * 0.6931472 + 2.5, rel=1e-5)
    vae = VAE((1, 4, 4), hidden=(8,), latent=3)
    recon, mu, logvar = vae(torch.rand(2, 1, 4, 4))
    assert recon.shape == (2, 1, 4, 4) and mu.shape == (2, 3)
    assert vae.sample(5).shape == (5, 1, 4, 4)


def test_gradient_penalty_vanishes_for_a_unit_gradient_critic():
    w = torch.randn(8)
    w = w / w.norm()
    critic = lambda x: x.flatten(1) @ w  # noqa: E731 - gradient norm exactly 1 everywhere
    real, fake = torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    critic2 = lambda x: 3 * x.flatten(1) @ w  # noqa: E731 - norm 3 -> penalty 10 * (3 - 1)^2
    assert gradient_penalty(critic2, real, fake).item() == pytest.approx(40.0)


def test_buffer_size_has_one_meaning_in_every_method():
    """buffer_size is an int (0: no buffer) or 'all' wherever it exists; 'none' is no longer a value."""
    import dataclasses
    import typing

    from forgetless import methods
    from forgetless.memory import BufferSize, buffer_capacity

    assert buffer_capacity("all") is None and buffer_capacity(0) == 0 and buffer_capacity(7) == 7
    holders = []
    for name, spec in methods.METHODS.items():
        hints = typing.get_type_hints(spec.cls.Config)
        if "buffer_size" not in {f.name for f in dataclasses.fields(spec.cls.Config)}:
            continue
        holders.append(name)
        assert hints["buffer_size"] == BufferSize, name
        scenario = spec.cls.scenarios[-1]
        info = synthetic_benchmark(scenario, n_tasks=2, per_class=5).info()
        assert methods.resolve_config(name, info, {"buffer_size": "all"}).buffer_size == "all"
        assert methods.resolve_config(name, info, {"buffer_size": "12"}).buffer_size == 12
        with pytest.raises(ConfigError, match="buffer_size"):
            methods.resolve_config(name, info, {"buffer_size": "none"})
        with pytest.raises(ConfigError, match="buffer_size"):
            methods.resolve_config(name, info, {"buffer_size": "-1"})
    assert {"replay", "agem", "icarl", "ccgn", "dgmw", "spacenet-rehearsal"} <= set(holders)
