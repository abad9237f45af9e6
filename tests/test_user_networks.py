"""A user's own network (not nn.Sequential: a skip connection and a custom forward) through the Python API:
every method that takes one learns on it and keeps old tasks' predictions; the ``python:`` import path; the
refusals name the layer and the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import methods, runner
from forgetless.errors import ConfigError
from forgetless.nn.masks import unit_gradient_factors
from forgetless.nn.surgery import layer_sources

from conftest import learn_task_by_task, synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


class ResidualNet(nn.Module):
    """conv -> relu -> conv + skip -> relu -> pool -> flatten -> linear (about 1.9k parameters on 1x8x8)."""

    def __init__(self, input_shape=(1, 8, 8), channels: int = 6, norm: bool = False) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels) if norm else None
        self.fc = nn.Linear(channels * (h // 2) * (w // 2), 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        skip = self.conv2(h)
        if self.bn is not None:
            skip = self.bn(skip)
        h = torch.relu(h + skip)
        return torch.relu(self.fc(F.max_pool2d(h, 2).flatten(1)))


class ChainNet(nn.Module):
    """A feed-forward chain with its own forward (SpaceNet's kind of network)."""

    def __init__(self, input_shape=(1, 8, 8)) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(torch.relu(self.a(x.flatten(1)))))


class Twice(nn.Module):
    def __init__(self, input_shape=(1, 8, 8)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x))).flatten(1)


class Concat(nn.Module):
    def __init__(self, input_shape=(1, 8, 8)) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 3, 3, padding=1)
        self.c = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3))


def residual_net(input_shape):
    """A factory for ``--set backbone=python:test_user_networks:residual_net``."""
    return ResidualNet(input_shape)


def not_a_network(input_shape):
    return 42


TRANSFER = dict(epochs=4, pretrain_epochs=4, batch_size=16, pretrain_batch_size=16, pretrain_lr=0.1,
                classifier_lr=0.1, lr=0.001)
TINY = {
    "hat": dict(epochs=10, lr_patience=0, batch_size=16, lr=0.3, lamb=0.1, smax=100),
    "packnet": dict(TRANSFER, retrain_epochs=1, retrain_lr=0.01, lr=0.05),
    "piggyback": TRANSFER,
    "affine-simple": TRANSFER,
    "affine-full": TRANSFER,
    "ccgn": dict(epochs=4, noise_free_epochs=1, sparsity_patience=1, macs_probe=0, batch_size=16),
    "hnet": dict(iterations=150, batch_size=32, chunk_size=500, emb_dim=8, chunk_emb_dim=8, beta=0.05),
}


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark("task", n_tasks=3)


def _learn_all(name, bench, backbone):
    torch.manual_seed(0)
    method = methods.create(name, bench.info(), backbone=backbone, **TINY[name])
    return method, learn_task_by_task(method, bench)


def _accuracy(logits: torch.Tensor, task) -> float:
    labels = torch.as_tensor(list(task.labels))
    return float((labels[logits[:, labels].argmax(1)] == task.test.y).float().mean())


@pytest.mark.parametrize("name", ["hat", "packnet", "piggyback", "affine-simple", "affine-full", "ccgn"])
def test_methods_learn_on_a_residual_network_and_keep_old_tasks_bit_identical(name, bench):
    method, history = _learn_all(name, bench, ResidualNet)
    assert not isinstance(method, nn.Sequential)
    assert _accuracy(history[-1][-1], bench.tasks[-1]) > 0.6, f"{name} did not learn the last task"
    for j in range(len(bench.tasks)):
        for later in history[j + 1:]:
            assert torch.equal(later[j], history[j][j]), f"{name}: task {j} changed"


def test_hnet_keeps_old_tasks_within_the_regulariser_tolerance(bench):
    _, history = _learn_all("hnet", bench, ResidualNet)
    assert _accuracy(history[-1][-1], bench.tasks[-1]) > 0.6
    for j, task in enumerate(bench.tasks[:-1]):  # the task's own outputs (task-IL answers over those only)
        labels = list(task.labels)
        before, after = history[j][j][:, labels], history[-1][j][:, labels]
        assert torch.allclose(before, after, atol=1.0, rtol=0.1)
        assert (before.argmax(1) == after.argmax(1)).float().mean() >= 0.95


def test_a_module_instance_through_the_runner_is_copied_not_trained(bench):
    net = ResidualNet()
    weights = net.conv1.weight.detach().clone()
    method = methods.create("piggyback", bench.info(), backbone=net, **TRANSFER)
    result = runner.run(method, bench, quiet=True)
    assert result["accuracy"][-1][-1] > 0.6
    assert torch.equal(net.conv1.weight, weights) and method.backbone is not net


def test_python_import_path_builds_the_backbone_and_bad_paths_are_one_line_errors(bench):
    info = bench.info()
    method = methods.create("piggyback", info, backbone="python:test_user_networks:residual_net", **TRANSFER)
    assert isinstance(method.backbone, ResidualNet)
    method = methods.create("hat", info, **{"backbone": "python:test_user_networks:residual_net"})
    assert isinstance(method.backbone, ResidualNet)
    for spec, why in [("python:no_such_module_here:net", "cannot import 'no_such_module_here'"),
                      ("python:test_user_networks:missing", "has no 'missing'"),
                      ("python:test_user_networks:not_a_network", "returned a int, not an nn.Module"),
                      ("python:test_user_networks", "not an import path")]:
        with pytest.raises(ConfigError, match=why) as err:
            methods.create("hat", info, backbone=spec)
        assert "\n" not in str(err.value)


def test_hat_reads_the_skip_connection_from_the_data_flow(bench):
    method = methods.create("hat", bench.info(), backbone=ResidualNet)
    assert method.sources == [[None], [0], [0, 1]]  # fc reads conv1 + conv2 (the skip sum)
    cum = [torch.tensor([1.0, 0, 0, 0, 0, 0]), torch.tensor([0.0, 1, 0, 0, 0, 0]), torch.ones(16)]
    factors = dict((id(p), f) for p, f in unit_gradient_factors(method.units, cum, method.sources))
    fc = method.units[2].layer.weight
    pre = torch.tensor([1.0, 1, 0, 0, 0, 0]).repeat_interleave(16)  # max of conv1's and conv2's masks
    assert torch.equal(factors[id(fc)], (1 - pre).expand_as(fc))
    conv1 = method.units[0].layer.weight  # reads the raw input: no pre mask
    assert torch.equal(factors[id(conv1)], (1 - cum[0]).view(-1, 1, 1, 1).expand_as(conv1))


def test_layer_sources_of_a_residual_net():
    net = ResidualNet()
    assert layer_sources(net, [net.conv1, net.conv2, net.fc], torch.zeros(2, 1, 8, 8)) == [[None], [0], [0, 1]]


def test_spacenet_takes_a_feed_forward_chain(bench):
    method = methods.create("spacenet", bench.info(), backbone=ChainNet, epochs=3, batch_size=16, lr=0.1,
                            connections=(800, 400, 60), selected=(16, 16), specific=(8, 8))
    result = runner.run(method, bench, quiet=True)
    assert result["accuracy"][-1][-1] > 0.6


@pytest.mark.parametrize("name, backbone, message", [
    ("spacenet", ResidualNet, "layer 'fc' reads 'conv1', 'conv2', not only 'conv2'.*skip connection"),
    ("spacenet", lambda s: ResidualNet(s, norm=True), "normalisation layer 'bn'"),
    ("hat", lambda s: ResidualNet(s, norm=True), "normalisation layer 'bn' \\(BatchNorm2d\\)"),
    ("hat", Twice, "layer 'conv' is called 2 times"),
    ("ccgn", Twice, "layer 'conv' is called 2 times"),
    ("hat", Concat, "the 6 inputs of layer 'c' are not the units of 'a' \\(3 units\\), 'b' \\(3 units\\)"),
    ("dgmw", ResidualNet, "dgmw does not take a user's network: it needs a generator"),
])
def test_refusals_name_the_layer_and_the_reason(name, backbone, message):
    scenario = "class" if name == "dgmw" else "task"
    info = synthetic_benchmark(scenario, n_tasks=2, per_class=5).info()
    with pytest.raises(ConfigError, match=message) as err:
        methods.create(name, info, backbone=backbone)
    assert "\n" not in str(err.value)


def test_a_user_networks_batch_norm_becomes_task_specific_for_the_transfer_methods(bench):
    from forgetless.nn.taskwise import TaskBatchNorm

    method = methods.create("affine-simple", bench.info(), backbone=lambda s: ResidualNet(s, norm=True), **TRANSFER)
    assert isinstance(method.backbone.bn, TaskBatchNorm) and method.backbone.bn.n_tasks == 3
    _, history = _learn_all("affine-simple", bench, lambda s: ResidualNet(s, norm=True))
    for j in range(len(bench.tasks)):
        for later in history[j + 1:]:
            assert torch.equal(later[j], history[j][j])
