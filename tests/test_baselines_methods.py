"""The regularisation and replay baselines as methods: configuration, behaviour, checkpoints (synthetic data)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from forgetless import methods, runner
from forgetless.errors import ConfigError
from forgetless.methods.rehearsal import stored_sample_loss
from forgetless.training import Context
from forgetless.training.penalties import trainable

from conftest import synthetic_benchmark

BASELINES = ["ewc", "online-ewc", "si", "mas", "lwf", "replay", "agem", "icarl", "dgr", "dgr-distill"]
FAST = {"iterations": 15, "batch_size": 16, "hidden": (32,)}


def _learn(model, bench, upto: int, seed: int = 0):
    for i in range(upto):
        ctx = Context(generator=torch.Generator().manual_seed(seed + i), task_index=i, n_tasks=len(bench))
        model.train()
        model.learn(bench.tasks[i], ctx)
    return model


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_runs_in_every_scenario_it_supports(name, scenario):
    bench = synthetic_benchmark(scenario, n_tasks=3, per_class=20)
    if name == "icarl" and scenario != "class":
        with pytest.raises(ConfigError, match="does not support the"):
            methods.create(name, bench.info())
        return
    result = runner.run(name, bench, seed=0, config=FAST, quiet=True)
    rows = result["accuracy"]
    assert [len(r) for r in rows] == [1, 2, 3]
    assert all(0.0 <= a <= 1.0 for r in rows for a in r)
    # the first task (no memory to protect yet) is learnt on well separated blobs
    assert rows[0][0] > 0.6


def test_per_scenario_defaults_and_overrides():
    expected = {"task": (1e5, 10.0, 1e8, 0.8), "domain": (1e10, 5e4, 1e8, 0.7), "class": (1e9, 5e3, 1e9, 0.8)}
    for scenario, (ewc, c, online, gamma) in expected.items():
        info = synthetic_benchmark(scenario, n_tasks=2).info()
        info = dataclasses.replace(info, name="split-mnist")
        assert methods.resolve_config("ewc", info).ewc_lambda == ewc
        assert methods.resolve_config("si", info).c == c
        oewc = methods.resolve_config("online-ewc", info)
        assert (oewc.ewc_lambda, oewc.gamma) == (online, gamma)
        assert methods.resolve_config("ewc", info, {"ewc_lambda": "3e2"}).ewc_lambda == 300.0
    info = synthetic_benchmark("class", n_tasks=2).info()
    assert methods.resolve_config("replay", info, {"buffer_size": "all"}).buffer_size == "all"
    assert methods.resolve_config("icarl", info, {"selection": "random"}).selection == "random"


@pytest.mark.parametrize("name, overrides, message", [
    ("replay", {"buffer_size": "-3"}, "buffer_size"),
    ("agem", {"buffer_size": "lots"}, "buffer_size"),
    ("icarl", {"selection": "closest"}, "selection"),
    ("online-ewc", {"gamma": "1.5"}, "gamma"),
    ("si", {"xi": "0"}, "xi"),
    ("ewc", {"lambda": "1"}, "valid: "),
])
def test_bad_options_are_one_line_config_errors(name, overrides, message):
    info = synthetic_benchmark("class", n_tasks=2).info()
    with pytest.raises(ConfigError, match=message) as err:
        methods.create(name, info, **overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, strength", [("ewc", "ewc_lambda"), ("si", "c"), ("mas", "mas_lambda")])
def test_penalty_keeps_parameters_near_the_previous_task(name, strength):
    bench = synthetic_benchmark("task", n_tasks=2, per_class=20)
    drift = {}
    for value in (0.0, 1e4):
        model = methods.create(name, bench.info(), **{**FAST, "iterations": 40, strength: value})
        torch.manual_seed(0)
        _learn(model, bench, 1)
        after_first = {n: p.detach().clone() for n, p in trainable(model).items()}
        _learn(model, bench, 2)
        drift[value] = sum(float((p.detach() - after_first[n]).pow(2).sum()) for n, p in trainable(model).items())
    assert drift[1e4] < 0.5 * drift[0.0]


def test_replay_buffer_all_keeps_every_sample_and_lwf_keeps_no_teacher():
    bench = synthetic_benchmark("class", n_tasks=3, per_class=20)
    replay = _learn(methods.create("replay", bench.info(), buffer_size="all", **FAST), bench, 3)
    assert len(replay.buffer) == sum(len(t.train) for t in bench.tasks)
    assert replay.storage()["buffer_samples"] == len(replay.buffer)
    lwf = _learn(methods.create("lwf", bench.info(), **FAST), bench, 2)
    assert lwf.teacher is None  # the previous model is needed only while training
    assert abs(lwf.current_weight - 0.5) < 1e-12  # task 2: current and distillation weigh 1/2 each


def test_agem_never_raises_the_memory_loss_to_first_order():
    bench = synthetic_benchmark("class", n_tasks=2, per_class=20)
    model = _learn(methods.create("agem", bench.info(), buffer_size=40, **FAST), bench, 1)
    ctx = Context(generator=torch.Generator().manual_seed(5), task_index=1)
    x, y = bench.tasks[1].train.batch(torch.arange(16))
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    model.before_step(None, bench.tasks[1], ctx)
    projected = [p.grad.clone() for p in trainable(model).values()]
    xm, ym, tm = model.buffer.sample(16, torch.Generator().manual_seed(5))  # the same reference batch
    memory_loss = stored_sample_loss(model(xm), ym, tm, model.info, 1)
    reference = torch.autograd.grad(memory_loss, list(trainable(model).values()))
    dot = sum(float((g * r).sum()) for g, r in zip(projected, reference, strict=True))
    assert model.projections == 1  # the new classes pull against the stored ones
    if model.projections:  # projected onto the boundary of the allowed half-space
        assert abs(dot) < 1e-4 * sum(float(r.pow(2).sum()) for r in reference)
    else:
        assert dot >= 0


def test_icarl_memory_is_class_balanced_and_classifies_by_nearest_mean():
    bench = synthetic_benchmark("class", n_tasks=3, per_class=30)
    model = _learn(methods.create("icarl", bench.info(), buffer_size=24, **FAST), bench, 3)
    counts = torch.bincount(model.buffer.as_split().y, minlength=6)
    assert len(model.buffer) == 24 and int(counts.min()) == int(counts.max()) == 4
    x = bench.tasks[0].test.inputs()
    model.eval()
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.backbone(x), dim=1)
        nearest = torch.cdist(f, model.class_means).argmin(1)
        assert torch.equal(model.predict(x).argmax(1), nearest)
    herd = _learn(methods.create("icarl", bench.info(), buffer_size=24, **FAST), bench, 1)
    rand = _learn(methods.create("icarl", bench.info(), buffer_size=24, selection="random", **FAST), bench, 1)
    assert not torch.equal(herd.buffer.splits[0].x, rand.buffer.splits[0].x)


def test_dgr_replays_generated_inputs_labelled_by_the_previous_model():
    bench = synthetic_benchmark("class", n_tasks=2, per_class=20)
    model = _learn(methods.create("dgr", bench.info(), latent=4, vae_hidden=(16,), **FAST), bench, 1)
    before = [p.detach().clone() for p in model.vae.parameters()]
    ctx = Context(generator=torch.Generator().manual_seed(1), task_index=1)
    model.before_task(bench.tasks[1], ctx)
    x, _ = bench.tasks[1].train.batch(torch.arange(16))
    logits = model(x)
    loss = model.replay_loss(type("B", (), {"x": x})(), logits, bench.tasks[1], ctx)
    assert model.replayed.shape == (16, *bench.info().input_shape)
    assert float(model.replayed.min()) >= 0.0 and float(model.replayed.max()) <= 1.0
    # hard targets: the previous classifier's labels, among the labels of the first task
    with torch.no_grad():
        labels = model.teacher(model.replayed)[:, [0, 1]].argmax(1)
    expected = torch.nn.functional.cross_entropy(model(model.replayed)[:, [0, 1, 2, 3]], labels)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    model.after_step(type("B", (), {"x": x})(), bench.tasks[1], ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.vae.parameters(), strict=True))
    model.after_task(bench.tasks[1], ctx)
    assert model.previous_vae is None and model.teacher is None


@pytest.mark.parametrize("name", ["online-ewc", "si", "replay", "icarl", "dgr-distill"])
def test_checkpointed_methods_predict_identically_and_keep_learning(name):
    bench = synthetic_benchmark("class", n_tasks=2, per_class=20)
    model = _learn(methods.create(name, bench.info(), **FAST), bench, 1)
    clone = pickle.loads(pickle.dumps(model))
    x = bench.tasks[0].test.inputs()
    model.eval()
    clone.eval()
    with torch.no_grad():
        assert torch.equal(model.predict(x), clone.predict(x))
    for m in (model, clone):  # the same second task from the same random state
        torch.manual_seed(3)
        m.learn(bench.tasks[1], Context(generator=torch.Generator().manual_seed(9), task_index=1))
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), clone.predict(x))
