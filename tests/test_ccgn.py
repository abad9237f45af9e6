"""CCGN (Abati et al. 2020): gates, gated networks, freezing, task classifier, memories, MACs."""

from __future__ import annotations

import copy
import dataclasses

import matplotlib.image
import pytest
import torch

from forgetless import methods, runner
from forgetless.errors import ConfigError
from forgetless.memory.ccgn_generators import TaskGenerator, WGANConfig, architecture_for, per_task_counts
from forgetless.methods import resolve_config
from forgetless.nn import backbones
from forgetless.nn.gates import (
    gate,
)
from forgetless.training import Context

from conftest import synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def _ccgn(bench, **options):
    base = dict(width=16, epochs=8, batch_size=16, optimizer="adam", lr=0.01, weight_decay=0.0, sparsity_patience=2,
                gate_bias=2.0, lambda_s=3.0, noise_free_epochs=0)
    return methods.create("ccgn", bench.info(), **{**base, **options})


# ------------------------------------------------------------------------------------------- gates


def test_effective_macs_count_open_channels_only():
    torch.manual_seed(0)
    cnn = backbones.create("simple-cnn", (1, 8, 8), width=4)
    net = gate(cnn, n_tasks=1)
    net.eval()
    net(torch.rand(1, 1, 8, 8), [0])  # records the spatial sizes
    # conv1 on 8x8 (pooled to 4x4), conv2 on 4x4 (pooled to 2x2), conv3 on 2x2; 3x3 kernels
    dense = 1 * 4 * 9 * 64 + 4 * 4 * 9 * 16 + 4 * 4 * 9 * 4
    assert net.dense_macs(1) == dense
    gates = [torch.tensor([[[1.0, 1.0, 0.0, 0.0]]]), torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]),
             torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])]
    expected = 1 * 2 * 9 * 64 + 2 * 1 * 9 * 16 + 1 * 1 * 9 * 4 + sum(b.macs() for b in net.banks)
    assert float(net.macs(gates, 1)[0, 0]) == expected


def test_paper_mac_convention_gives_table3_backbone_figure():
    net = gate(backbones.create("simple-cnn", (1, 28, 28)), n_tasks=1)
    net.eval()
    net(torch.rand(1, 1, 28, 28), [0])
    assert net.dense_macs(1, paper=True) == 926_100  # Table 3: 0.926M
    assert net.dense_macs(1) == 22_755_600  # what a 100-filter 3x3 SimpleCNN on 28x28 really costs


# ------------------------------------------------------------------------------------------ method

def test_task_il_old_tasks_bit_identical_and_frozen_kernels_unchanged():
    bench = synthetic_benchmark("task", n_tasks=3, shape=(1, 8, 8), per_class=40)
    model = _ccgn(bench)
    ctx = Context(generator=torch.Generator().manual_seed(0))
    model.learn(bench.tasks[0], ctx)
    x0 = bench.tasks[0].test.inputs()
    model.eval()
    before = model.predict(x0, 0).clone()
    conv = model.net.cnn.conv3
    frozen = model.net.banks[2].frozen.clone()
    assert frozen.any() and not frozen.all()  # the sparsity objective left free kernels
    kept = conv.weight[frozen].clone()
    free_after_task0 = conv.weight[~frozen].clone()
    for t in (1, 2):
        ctx.task_index = t
        model.learn(bench.tasks[t], ctx)
    model.eval()
    assert torch.equal(model.predict(x0, 0), before)
    assert torch.equal(conv.weight[frozen], kept)
    assert not torch.equal(conv.weight[~frozen], free_after_task0)  # re-initialised and retrained
    # a finished task opens only kernels that were relevant to it
    for bank in model.net.banks:
        for t in range(3):
            assert not (bank.allowed[t] & ~bank.frozen).any()


def test_frozen_kernels_gradients_neither_move_them_nor_shrink_the_clipped_step_of_free_ones():
    bench = synthetic_benchmark("task", n_tasks=2, shape=(1, 8, 8), per_class=40)
    model = _ccgn(bench, optimizer="sgd", momentum=0.0, lr=0.1, grad_clip=1.0)
    model.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0)))
    conv = model.net.cnn.conv3
    rows = model.net.banks[2].frozen
    assert rows.any() and not rows.all()

    def step_from(snapshot, frozen_scale):
        model.load_state_dict(snapshot)
        params = model._trainable(1)
        frozen = [(p, r, p.detach()[r].clone()) for p, r in model.net.freeze_rows() if bool(r.any())]
        # a tiny gradient on the free kernels, a huge one (or none) on the frozen ones
        loss = 1e-3 * conv.weight[~rows].sum() + frozen_scale * conv.weight[rows].sum()
        model.step(loss, params, frozen, model.make_optimizer(params, 1))
        return conv.weight.detach().clone()

    snapshot = copy.deepcopy(model.state_dict())
    start = conv.weight.detach().clone()
    with_huge, without = step_from(snapshot, 1e6), step_from(snapshot, 0.0)
    assert torch.equal(with_huge[rows], start[rows])
    assert torch.allclose(with_huge[~rows], start[~rows] - 0.1 * 1e-3)  # the free kernels' step is not clipped
    assert torch.equal(with_huge, without)


def test_inputs_are_standardised_with_the_first_tasks_statistics_which_then_stay_fixed():
    bench = synthetic_benchmark("task", n_tasks=2, shape=(2, 8, 8), per_class=20)
    model = _ccgn(bench, epochs=1)
    ctx = Context(generator=torch.Generator().manual_seed(0))
    model.learn(bench.tasks[0], ctx)
    x = bench.tasks[0].train.inputs()
    per_channel = x.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(model.input_norm.mean, per_channel.mean(1))
    torch.testing.assert_close(model.input_norm.std, per_channel.std(1))
    z = model.input_norm(x).transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(z.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(2))
    fixed = model.input_norm.state_dict()
    ctx.task_index = 1
    model.learn(bench.tasks[1], ctx)
    assert all(torch.equal(v, model.input_norm.state_dict()[k]) for k, v in fixed.items())
    with pytest.raises(RuntimeError, match="already fitted"):
        model.input_norm.fit(x)
    raw = _ccgn(bench, epochs=1, input_norm="none")
    raw.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0)))
    assert torch.equal(raw.input_norm(x), x)
    with pytest.raises(ConfigError, match="input_norm"):
        _ccgn(bench, input_norm="batch")


def test_relevance_is_the_firing_rate_on_validation():
    bench = synthetic_benchmark("task", n_tasks=1, shape=(1, 8, 8), per_class=30)
    model = _ccgn(bench, epochs=2)
    model.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0)))
    val = bench.tasks[0].val
    model.eval()
    _, gates = model.streams(val.inputs(), [0])
    for layer, g in enumerate(gates):
        torch.testing.assert_close(model.relevance[0][layer], g[0].mean(0))
        assert torch.equal(model.net.banks[layer].allowed[0], g[0].mean(0) > 0)


def test_gate_norm_statistics_are_re_estimated_at_the_final_weights():
    bench = synthetic_benchmark("task", n_tasks=1, shape=(1, 8, 8), per_class=30)
    model = _ccgn(bench, epochs=2)
    model.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0)))
    module = model.net.banks[0].modules_[0]  # first layer: its input (the pooled image) has no gates upstream
    pooled = model.input_norm(bench.tasks[0].train.inputs()).mean(dim=(2, 3))
    hidden = module.fc1(pooled).detach()
    batch_means = torch.stack([h.mean(0) for h in hidden.split(16)])  # cumulative average of batch means
    torch.testing.assert_close(module.bn.running_mean, batch_means.mean(0), rtol=1e-4, atol=1e-6)
    assert module.bn.momentum == 0.1


def test_task_il_run_has_zero_forgetting_and_reports_macs():
    bench = synthetic_benchmark("task", n_tasks=3, shape=(1, 8, 8), per_class=40)
    result = runner.run(_ccgn(bench, epochs=8), bench, seed=0, quiet=True)
    assert result["forgetting"] == 0.0
    assert result["final_accuracy"] > 0.7
    report = result["report"]
    assert len(report["macs_after_task"]) == 3
    assert all(r["task_il"] < r["backbone"] for r in report["macs_after_task"])


def test_episodic_rehearsal_batches_are_task_uniform():
    bench = synthetic_benchmark("class", n_tasks=3, shape=(1, 8, 8), per_class=40)
    model = _ccgn(bench, memory="episodic", buffer_size=30)
    g = torch.Generator().manual_seed(0)
    for t in range(2):
        model.buffer.add_task(bench.tasks[t].train, t, g)
    x = bench.tasks[2].train.inputs()[:300].repeat(4, 1, 1, 1)
    _, tasks = model.rehearsal_batch(x, 2, Context(generator=g))
    counts = torch.bincount(tasks, minlength=3).float() / len(tasks)
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.05)
    assert len(model.buffer) == 30


def test_class_il_episodic_only_task_classifier_sees_replay():
    bench = synthetic_benchmark("class", n_tasks=3, shape=(1, 8, 8), per_class=40)
    model = _ccgn(bench, memory="episodic", buffer_size=60, epochs=8)
    result = runner.run(model, bench, seed=0, quiet=True)
    assert result["task_inference_accuracy"] > 0.5  # chance: 1/3
    assert result["final_accuracy"] > 0.4  # chance: 1/6
    # heads of finished tasks are frozen (replayed samples never update them)
    assert not any(p.requires_grad for h in model.heads.heads for p in h.parameters())
    x = bench.tasks[0].test.inputs()
    out = model.predict(x)
    chosen = model.infer_task(x)
    finite = torch.isfinite(out)
    for t in range(3):  # each sample gets the logits of the head its predicted task picks
        labels = model.heads.labels(t)
        rows = chosen == t
        assert finite[rows][:, labels].all() and finite[rows].sum(1).eq(len(labels)).all()


def test_class_il_needs_a_memory_and_gated_backbones_only():
    bench = synthetic_benchmark("class", n_tasks=2, shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="memory"):
        _ccgn(bench, memory="none")
    with pytest.raises(ConfigError, match="memory"):
        _ccgn(bench, memory="tape")
    task_bench = synthetic_benchmark("task", n_tasks=2, shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="gated"):
        methods.create("ccgn", task_bench.info(), backbone="mlp")


def test_kernel_init_reinitialises_only_the_given_rows():
    torch.manual_seed(0)
    cnn = backbones.create("simple-cnn", (1, 8, 8), width=64)
    kernels = gate(cnn, n_tasks=1).kernels()[1]  # conv2: 64 x 64 x 3 x 3
    conv = kernels.convs[0]
    before = conv.weight.detach().clone()
    rows = torch.zeros(64, dtype=torch.bool)
    rows[:48] = True
    kernels.reinitialize(rows, "kaiming")
    assert torch.equal(conv.weight[~rows], before[~rows]) and not torch.equal(conv.weight[rows], before[rows])
    assert torch.all(conv.bias[rows] == 0)
    fan_in = 64 * 9  # He et al.: std sqrt(2 / fan_in); 48 x 576 draws
    assert conv.weight[rows].std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="kaiming"):
        kernels.reinitialize(rows, "xavier")
    bench = synthetic_benchmark("task", n_tasks=2, shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="kernel_init"):
        _ccgn(bench, kernel_init="xavier")


def test_gating_modules_of_the_current_task_learn_at_gate_lr_scale():
    bench = synthetic_benchmark("task", n_tasks=2, shape=(1, 8, 8))
    model = _ccgn(bench, gate_lr_scale=30.0, lr=0.01)
    optimizer = model.make_optimizer(model._trainable(0), 0)
    gating = {id(p) for bank in model.net.banks for p in bank.modules_[0].parameters()}
    by_lr = {round(group["lr"], 6): {id(p) for p in group["params"]} for group in optimizer.param_groups}
    assert by_lr[0.3] == gating
    assert id(model.net.cnn.conv1.weight) in by_lr[0.01] and not gating & by_lr[0.01]
    with pytest.raises(ConfigError, match="gate_lr_scale"):
        _ccgn(bench, gate_lr_scale=0.0)


def test_cpu_budget_defaults_on_mnist_paper_values_on_cifar():
    info = synthetic_benchmark("task", n_tasks=2, shape=(1, 8, 8)).info()
    mnist = resolve_config("ccgn", dataclasses.replace(info, dataset="mnist"))
    assert (mnist.lambda_s, mnist.gate_lr_scale, mnist.kernel_init) == (0.5, 30.0, "kaiming")
    assert (mnist.batch_size, mnist.lr, mnist.epochs, mnist.input_norm) == (64, 0.05, 7, "first-task")
    cifar = resolve_config("ccgn", dataclasses.replace(info, dataset="cifar10", input_shape=(3, 8, 8)))
    assert (cifar.backbone, cifar.gate_lr_scale, cifar.lambda_s, cifar.lr) == ("resnet18", 1.0, 1.0, 0.1)


def test_generative_memory_trains_a_generator_at_the_start_of_each_task(tmp_path):
    bench = synthetic_benchmark("class", n_tasks=2, shape=(1, 28, 28), per_class=20)
    model = _ccgn(bench, memory="generative", gan_iterations=2, gan_batch_size=8, epochs=1, macs_probe=0,
                  grid_samples=3)
    seen = []
    original = model.rehearsal_batch

    def spy(x, t, ctx):
        seen.append(len(model.generators))
        xs, ts = original(x, t, ctx)
        assert xs.shape[1:] == (1, 28, 28) and set(ts.tolist()) <= set(range(t + 1))
        return xs, ts

    model.rehearsal_batch = spy
    ctx = Context(generator=torch.Generator().manual_seed(0), out_dir=tmp_path)
    model.learn(bench.tasks[0], ctx)
    assert len(model.generators) == 1
    ctx.task_index = 1
    model.learn(bench.tasks[1], ctx)
    assert seen and all(n == 2 for n in seen)  # the current task's generator exists before its training
    assert model.storage()["generator_bytes"] == 2 * 4 * model.generators[0].n_parameters()
    # one row of 3 samples per task generator after each task
    for t in (1, 2):
        assert matplotlib.image.imread(tmp_path / "samples" / f"after-task-{t}.png").shape[:2] == (t * 28, 3 * 28)
    with pytest.raises(ConfigError, match="grid_samples"):
        _ccgn(bench, grid_samples=-1)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_wgan_architectures_table9(shape):
    torch.manual_seed(0)
    gen = TaskGenerator(shape)
    sample = gen.sample(3)
    assert sample.shape == (3, *shape) and sample.min() >= 0 and sample.max() <= 1
    critic = gen.new_critic()
    assert critic(torch.rand(2, *shape)).shape == (2, 1)
    first = next(m for m in gen.net.modules() if isinstance(m, torch.nn.Linear))
    assert (first.in_features, first.out_features) == (128, 4096 if shape[0] == 1 else 8192)
    images = torch.rand(16, *shape)
    losses = gen.fit(images, WGANConfig(iterations=2, batch_size=4), torch.Generator().manual_seed(0))
    assert len(losses) == 2
    with pytest.raises(ConfigError):
        architecture_for((1, 8, 8))


def test_per_task_counts_sum_and_cover():
    counts = per_task_counts(3000, 3, torch.Generator().manual_seed(0))
    assert counts.sum() == 3000 and (counts > 900).all()


def test_checkpoint_round_trip_keeps_predictions():
    import pickle

    bench = synthetic_benchmark("task", n_tasks=1, shape=(1, 8, 8), per_class=20)
    model = _ccgn(bench, epochs=1)
    model.learn(bench.tasks[0], Context())
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    x = bench.tasks[0].test.inputs()
    model.eval()
    clone.eval()
    assert torch.equal(model.predict(x, 0), clone.predict(x, 0))


# --------------------------------------------------------------------------------------- real MNIST

def test_real_mnist_two_tasks_no_forgetting(mnist_root):
    result = runner.run("ccgn", "split-mnist", scenario="task", seed=0, data_root=str(mnist_root), quiet=True,
                        bench_options={"n_tasks": 2, "train_per_class": 150, "test_per_class": 100},
                        config={"epochs": 8, "batch_size": 32, "width": 32, "optimizer": "adam", "lr": 0.005,
                                "weight_decay": 0.0})
    first = [row[0] for row in result["accuracy"]]
    assert first[0] > 0.9 and first[1] == first[0]  # task 1 learned, then untouched by task 2
    assert result["forgetting"] == 0.0
