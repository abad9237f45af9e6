"""SpaceNet, Static-SparseNN and SpaceNet-Rehearsal (forgetless.methods.spacenet)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from forgetless import checkpoint, methods, runner
from forgetless.errors import ConfigError
from forgetless.nn.sparse import SparseNetwork
from forgetless.training import Context

from conftest import synthetic_benchmark

# a small MLP setting that fits the 8 x 8 synthetic images
SMALL = {"hidden": (40, 40), "selected": (12, 12), "specific": (5, 5), "connections": (300, 60, 16), "epochs": 3,
         "batch_size": 32, "lr": 0.1}


def bench(n_tasks: int = 3):
    return synthetic_benchmark("class", n_tasks=n_tasks, per_class=40)


def train(name: str, b, out_dir: Path | None = None, **overrides):
    method = methods.create(name, b.info(), **{**SMALL, **overrides})
    snapshots = []
    for i, task in enumerate(b.tasks):
        ctx = Context(generator=torch.Generator().manual_seed(i), task_index=i, n_tasks=len(b), out_dir=out_dir)
        method.learn(task, ctx)
        snapshots.append({k: v.clone() for k, v in method.net.state_dict().items()})
    return method, snapshots


def test_old_tasks_connections_are_bit_identical_after_later_tasks():
    b = bench()
    method, snaps = train("spacenet", b)
    net = method.net
    for t in range(len(b) - 1):
        for l, layer in enumerate(net.layers):
            prefix = f"layer{l}"
            old_owner = snaps[t][_key(net, layer, "owner")]
            old_frozen = snaps[t][_key(net, layer, "frozen")]
            for u in range(t + 1):
                mask = old_owner == u + 1
                assert torch.equal(layer.owner == u + 1, mask), f"{prefix}: task {u}'s mask changed"
                assert torch.equal(layer.frozen[mask], old_frozen[mask]), f"{prefix}: task {u}'s weights changed"
        # reserved neurons' biases are frozen for good
        for l in range(1, len(net.sizes) - 1):
            layer = net.layers[l - 1]
            reserved = ~snaps[t][f"free_{l}"]
            assert torch.equal(layer.effective_bias()[reserved], snaps[t][_key(net, layer, "bias_frozen")][reserved])
    # the per-task masks are disjoint and every task kept its allocation size
    for layer, count in zip(net.layers, SMALL["connections"], strict=True):
        assert [layer.connections(t) for t in range(len(b))] == [count] * len(b)


def _key(net: SparseNetwork, layer, name: str) -> str:
    for prefix, module in net.named_modules():
        if module is layer:
            return f"{prefix}.{name}"
    raise KeyError(name)


def test_old_output_weights_are_set_aside_while_training_and_restored_for_inference():
    b = bench(2)
    method = methods.create("spacenet", b.info(), **SMALL)
    method.learn(b.tasks[0], Context(generator=torch.Generator().manual_seed(0), task_index=0, n_tasks=2))
    x = b.tasks[0].test.inputs()
    after_first = method.predict(x).detach()
    seen = {}
    net = method.net

    def spy(module, args, kwargs, output):
        seen["show"] = kwargs.get("show_frozen", True)
        seen["logits"] = output.detach()

    handle = net.head.register_forward_hook(spy, with_kwargs=True)
    net.allocate_task(1, b.tasks[1].labels, [12, 12], [300, 60, 16], torch.Generator().manual_seed(1))
    logits = net(x, show_old_outputs=False)
    handle.remove()
    assert seen["show"] is False
    # during the new task, old classes see only their (frozen) bias
    old = b.tasks[0].labels
    assert torch.allclose(logits[:, old], net.head.effective_bias()[old].expand(len(x), -1))
    # at inference the old rows are back, and they are the rows learned on task 0
    net.end_task()
    restored = method.predict(x).detach()
    assert not torch.allclose(restored[:, old], logits[:, old])
    rows = net.head.task_units(0).any(1)
    assert rows[old].all() and not rows[b.tasks[1].labels].any()
    assert after_first.shape == restored.shape


def test_spacenet_rewires_after_every_epoch_but_the_last_and_static_sparse_never(monkeypatch):
    calls = []
    original = SparseNetwork.rewire

    def counting(self, *args, **kwargs):
        calls.append(self.task)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SparseNetwork, "rewire", counting)
    b = bench(2)
    method, _ = train("spacenet", b)
    assert calls == [0, 0, 1, 1]  # 3 epochs -> 2 rewirings per task
    assert all(len(h["rewired_per_epoch"]) == 2 for h in method.history)
    dropped, grown = method.history[0]["rewired_per_epoch"][0][0]
    assert dropped == int(0.2 * 300) == grown
    calls.clear()
    train("static-sparse", b)
    assert calls == []


def test_rewiring_that_shrinks_a_full_layer_keeps_training():
    # 12 selected neurons x 64 inputs = 768 positions, all taken by 1000 requested connections: the drop
    # phase frees 20 % and the grow phase (which skips the units just dropped) finds no candidate, so the
    # layer's number of trainable units shrinks between epochs; training must go on with the new size.
    b = bench(2)
    method, _ = train("spacenet", b, connections=(1000, 60, 16))
    first = method.history[0]
    assert first["allocated_per_layer"][0] == 12 * 64
    assert list(first["rewired_per_epoch"][0][0]) == [int(0.2 * 768), 0]
    assert method.net.connections(0)[0] < 768


def test_report_counts_connections_free_neurons_and_saves_the_heat_maps(tmp_path):
    b = bench()
    method, _ = train("spacenet", b, out_dir=tmp_path)
    rep = method.report()
    per_task = sum(SMALL["connections"])
    assert rep["connections_per_task"] == [per_task] * 3 and rep["connections_total"] == 3 * per_task
    dense = 64 * 40 + 40 * 40 + 40 * 6
    assert rep["dense_connections"] == dense and rep["fraction_of_dense"] == pytest.approx(3 * per_task / dense)
    assert rep["free_neurons_after_task"] == [[35, 35], [30, 30], [25, 25]]
    assert len(method.heatmaps) == 3 and method.heatmaps[0].shape == (8, 8)
    assert int(method.heatmaps[1].sum()) == SMALL["connections"][0]
    files = [Path(p) for p in rep["heatmap_files"]]
    assert len(files) == 4 and all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in files)
    storage = method.storage()
    assert storage["connections"] == 3 * per_task and storage["model_bytes"] == 4 * (3 * per_task + 40 + 40 + 6)


def test_sparse_macs_count_one_per_connection():
    b = bench(1)
    method, _ = train("spacenet", b)
    x = b.tasks[0].test.inputs(slice(0, 1))
    assert method.macs_per_sample(x) == sum(SMALL["connections"])


def test_rehearsal_trains_on_current_plus_stored_data_and_keeps_old_connections():
    b = bench()
    method, snaps = train("spacenet-rehearsal", b, buffer_size=30)
    assert method.buffer.task_ids == [0, 1, 2] and len(method.buffer) == 30
    split = method.training_split(b.tasks[1], Context())
    assert len(split) == len(b.tasks[1].train) + len(method.buffer)
    head = method.net.head
    mask = snaps[0][_key(method.net, head, "owner")] == 1
    assert torch.equal(head.frozen[mask], snaps[0][_key(method.net, head, "frozen")][mask])
    assert method.config.set_aside_output is False and method.storage()["buffer_samples"] == 30


def test_checkpoint_round_trip_keeps_predictions(tmp_path):
    b = bench(2)
    result = runner.run("spacenet", b, config=SMALL, out=tmp_path / "run", quiet=True, keep_checkpoints=True)
    assert result["report"]["connections_total"] == 2 * sum(SMALL["connections"])
    state = checkpoint.read(tmp_path / "run" / "checkpoints" / "task-2.pt")
    buf = io.BytesIO()
    torch.save(checkpoint.encode(state["method"]), buf)
    buf.seek(0)
    clone = checkpoint.decode(torch.load(buf, weights_only=True))
    x = b.tasks[0].test.inputs()
    assert torch.equal(clone.predict(x), state["method"].predict(x))


def test_cnn_defaults_and_kernel_granularity():
    b = synthetic_benchmark("class", n_tasks=2, per_class=12, shape=(3, 16, 16))
    info = b.info()
    cfg = methods.resolve_config("spacenet", type(info)(**{**info.__dict__, "default_backbone": "simple-cnn"}))
    assert (cfg.backbone, cfg.epochs, cfg.lr, cfg.density, cfg.selected) == ("zenke-cnn", 20, 0.1, 0.12, None)
    assert cfg.specific == (2, 2, 5, 6, 30)
    method, snaps = train("spacenet", b, backbone="zenke-cnn", width=8, selected=None,
                          specific=(1, 1, 2, 2, 10), connections=None, density=0.12, epochs=2, lr=0.05)
    conv = method.net.layers[1]
    per_kernel = (conv.frozen != 0).flatten(2).sum(2)
    assert set(per_kernel.unique().tolist()) <= {0, 9}
    assert conv.connections(0) == round(0.12 * 8 * 8)
    key = _key(method.net, conv, "frozen")
    mask = snaps[0][_key(method.net, conv, "owner")] == 1
    assert torch.equal(conv.frozen[mask], snaps[0][key][mask])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"selected": (80, 80, 80)}, "selected needs one value per hidden layer"),
    ({"connections": (10, 10)}, "connections needs one count per sparse layer"),
    ({"connections": None}, "set connections"),
    ({"backbone": "resnet18"}, "feed-forward backbone"),
    ({"rewire_fraction": 1.5}, "rewire_fraction"),
])
def test_bad_configs_are_one_line_errors(overrides, message):
    b = bench(2)
    with pytest.raises(ConfigError, match=message):
        methods.create("spacenet", b.info(), **overrides)


@pytest.mark.mnist
def test_split_mnist_spacenet_learns_all_tasks_with_the_papers_connection_budget(mnist_root):
    """One seed of the paper's setting (test sets cut to 300 per class); 5 seeds are in docs/spacenet.md.

    Fine-tuning in class-IL can only get the last task right (19.45 +- 0.04 with this MLP and budget), so
    0.5 is far above it (SpaceNet's 5-seed mean is 0.70)."""
    opts = {"normalize": True, "val_fraction": 0.0, "test_per_class": 300}
    res = runner.run("spacenet", "split-mnist", seed=0, bench_options=opts, data_root=str(mnist_root), quiet=True)
    rep = res["report"]
    assert rep["connections_per_task"] == [11720] * 5 and rep["connections_total"] == 58600
    assert rep["dense_connections"] == 784 * 400 + 400 * 400 + 400 * 10
    assert rep["free_neurons_after_task"][-1] == [200, 200]
    assert res["final_accuracy"] > 0.5
    assert min(res["accuracy"][-1]) > 0.3  # no task is forgotten outright
