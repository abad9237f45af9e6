"""DGMw/DGMa (issue 6): mask schedule, generator growth and protection, the methods on synthetic data and a
short real-MNIST run."""

from __future__ import annotations

import math

import pytest
import torch

from forgetless import benchmarks, runner
from forgetless.errors import ConfigError
from forgetless.memory.acgan import ACDiscriminator, conditioned_noise
from forgetless.memory.plastic_generator import PlasticGenerator
from forgetless.methods import create
from forgetless.nn.masks import nested_anneal, reuse_weight
from forgetless.rerun import rerun_task
from forgetless.training import Context

from conftest import synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"iterations": 4, "ngf": 2, "ndf": 4, "batch_size": 16}
# the discriminator predicts, as in the paper (the classifier extensions off)
PAPER_CLASSIFIER = {"classifier_ema": 0.0, "pseudo_selection": False, "consolidation_steps": 0}


# ------------------------------------------------------------------------------------------ mask pieces

def test_nested_anneal_matches_eqs_3_and_4_by_hand():
    # s_max 100, 6 steps in cycles of 3: I = 2, s_max_1 = 1/100, s_max_2 = 100
    local = [nested_anneal(100.0, k, 6, 3, local=True) for k in range(6)]
    expected = [(100.0, 0.01), (0.01 + (100.0 - 0.01) * 0.5, 0.01), (0.01, 0.01),  # cycle 1 anneals 1/0.01 -> 0.01
                (0.01, 100.0), (0.01 + (100.0 - 0.01) * 0.5, 100.0), (100.0, 100.0)]
    for (s, smax_i), (es, esmax) in zip(local, expected, strict=True):
        assert s == pytest.approx(es) and smax_i == pytest.approx(esmax)
    # global only (DGMa): s constant within a cycle
    assert [nested_anneal(100.0, k, 6, 3, local=False)[0] for k in range(6)] == pytest.approx([0.01] * 3 + [100.0] * 3)
    # a shorter last cycle still ends at s_max
    assert nested_anneal(100.0, 4, 5, 3)[0] == pytest.approx(100.0)
    assert nested_anneal(100.0, 3, 5, 3)[0] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        nested_anneal(100.0, 5, 5, 3)


def test_reuse_weight_is_lambda_times_size_over_free():
    assert reuse_weight(0.08, 60, 40) == pytest.approx(0.12)
    with pytest.raises(ValueError):
        reuse_weight(0.1, 10, 0)


# ---------------------------------------------------------------------------------------------- generator

def _reserve(gen: PlasticGenerator, signs: list[float]) -> None:
    """Set the current task's embeddings so that layer k's mask is all ones (+) or all zeros (-)."""
    with torch.no_grad():
        for emb, sign in zip(gen.embeddings, signs, strict=True):
            emb.embedding.fill_(sign)


def test_dgmw_growth_keeps_free_weights_constant_by_hand():
    gen = PlasticGenerator("weight", nz=4, ngf=1, channels=1)  # weights (4,4,4,4), (4,2,4,4), (2,1,4,4)
    initial_free = gen.free()
    gen.begin_task()
    _reserve(gen, [1.0, 1.0, -1.0])
    record = gen.end_task(s_max=100.0)
    # layer 1 reserved 256 weights -> ceil(256 / (4 * 16)) = 4 new channels; layer 2 reserved 128, its input
    # growth already added 4 * 2 * 16 = 128 free weights -> no new channel; layer 3 reserved nothing
    assert record["added_units"] == [4, 0, 0]
    assert gen.widths == (8, 2, 1)
    assert record["newly_reserved_per_layer"] == [256, 128, 0]
    assert gen.free() == initial_free  # 8 x 4 x 16 - 256 = 256, 8 x 2 x 16 - 128 = 128, 2 x 1 x 16 = 32
    assert all(m.dtype == torch.bool for m in gen.task_masks[0])


def test_dgma_growth_adds_one_unit_per_reserved_unit():
    gen = PlasticGenerator("unit", nz=4, ngf=2, channels=1)  # widths 8, 4, 2
    gen.begin_task()
    with torch.no_grad():
        gen.embeddings[0].embedding.fill_(-1.0)
        gen.embeddings[0].embedding[0, :3] = 1.0  # 3 of 8 units reserved in layer 1
        gen.embeddings[1].embedding.fill_(-1.0)
        gen.embeddings[2].embedding.fill_(1.0)  # both units of layer 3
    record = gen.end_task(s_max=100.0)
    assert record["added_units"] == [3, 0, 2]
    assert gen.widths == (11, 4, 4)
    assert gen.free() == gen.initial_units  # free units constant
    assert [m.sum().item() for m in gen.task_masks[0]] == [3, 0, 2]


@pytest.mark.parametrize(("mode", "mask_at"), [("weight", "activation"), ("unit", "activation"),
                                               ("unit", "conv_output")])
def test_reserved_weights_get_no_gradient(mode, mask_at):
    gen = PlasticGenerator(mode, nz=6, ngf=2, channels=1, unit_mask_at=mask_at)
    gen.begin_task()
    with torch.no_grad():
        for emb in gen.embeddings:  # both reserved and free entries in every layer
            emb.embedding.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
            emb.embedding.view(-1)[0] = 1.0
            emb.embedding.view(-1)[-1] = -1.0
    gen.end_task(s_max=400.0)
    gen.begin_task()
    z = conditioned_noise(torch.tensor([0, 1, 2, 3]), 6, 3)
    out = gen(z, 1, s=50.0)
    (out.square().mean() + gen.regularizer(50.0)).backward()
    gen.block_gradients()
    for k, w in enumerate(gen.weights):
        factor = gen._factors[k]
        assert (factor < 1).any()  # something is reserved
        assert torch.all(w.grad[factor == 0] == 0)
        assert (w.grad[factor == 1] != 0).any()
        if mask_at == "conv_output":  # a masked unit is not 0 before its batch norm: no weight into a reserved one
            reserved = gen.cumulated[k].bool()
            assert torch.all(factor[:, reserved] == 0)


# ---------------------------------------------------------------------------------------------- methods

def _learn(method_name: str, n_tasks: int = 3, **overrides):
    bench = synthetic_benchmark(n_tasks=n_tasks, classes_per_task=1, per_class=32)
    info = bench.info()
    torch.manual_seed(0)  # initial weights and gradient-penalty draws: independent of the tests run before
    method = create(method_name, info, **{**TINY, **overrides})
    ctx = Context(generator=torch.Generator().manual_seed(0))
    return method, list(bench), ctx


@pytest.mark.parametrize(("name", "mask_at"), [("dgmw", None), ("dgma", "activation"), ("dgma", "conv_output")])
def test_old_class_generation_is_unchanged_after_new_classes(name, mask_at):
    method, tasks, ctx = _learn(name, **({} if mask_at is None else {"mask_at": mask_at}))
    noise = torch.randn(6, method.config.nz, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(6, dtype=torch.long)
    method.learn(tasks[0], ctx)
    first = method.generate(labels, noise=noise)
    weights = [w.detach().clone() for w in method.generator.weights]
    for task in tasks[1:]:
        method.learn(task, ctx)
        assert torch.equal(method.generate(labels, noise=noise), first)
    # the weights task 1 reserved did not move; the generator grew
    masks = method.generator.task_masks[0]
    checked = 0
    for k, (old, new, mask) in enumerate(zip(weights, method.generator.weights, masks, strict=True)):
        if name == "dgmw":  # a mask entry per weight of task 1's widths
            rows, cols = mask.shape[:2]
            used = mask
        else:  # unit masks: a weight is task 1's when both of its units are (HAT's min(pre, post)) or, masks
            # before batch norm, when it goes into one of task 1's units
            pre = masks[k - 1] if k > 0 else torch.ones(method.config.nz, dtype=torch.bool)
            if mask_at == "conv_output":
                pre = torch.ones_like(pre)
            rows, cols = len(pre), len(mask)
            used = pre[:, None] & mask[None, :]
        checked += int(used.sum())
        assert torch.equal(new.detach()[:rows, :cols][used], old[:rows, :cols][used])
    assert checked > 0
    assert method.generator.n_params() > method.initial_size
    assert len(method.generator.history) == 3


def test_dgmw_runs_end_to_end_with_reports_and_sample_grids(tmp_path):
    bench = synthetic_benchmark(n_tasks=3, classes_per_task=1, per_class=32)
    result = runner.run("dgmw", bench, config=TINY, out=tmp_path / "run", quiet=True)
    report, storage = result["report"], result["storage"]
    sizes = report["generator_size_per_task"]
    assert sizes[0] == report["generator_size_initial"] and sizes[-1] == report["generator_size_final"]
    assert len(sizes) == 4 and sizes == sorted(sizes)
    assert storage["mask_bytes"] > 0 and storage["generator_weight_bytes"] == 4 * sizes[-1]
    for t in (1, 2, 3):
        assert (tmp_path / "run" / "samples" / f"after-task-{t}.png").is_file()
    # class-IL: the classifier's logits cover every label seen
    assert len(result["accuracy"][-1]) == 3


def test_real_samples_variant_stores_and_replays_real_samples():
    method, tasks, ctx = _learn("dgmw", real_ratio=0.5)
    method.learn(tasks[0], ctx)
    assert len(method.buffer) == math.ceil(0.5 * len(tasks[0].train))
    x, y = method._replay_set([0], 20, ctx)
    assert len(y) == 20 and bool((y == 0).all())
    stored = method.to_gan(method.buffer.as_split().inputs())
    assert torch.equal(x[:10], stored[:10])  # ceil(r N) = 10 real ones first, the rest generated
    method_k, tasks_k, ctx_k = _learn("dgmw", buffer_size=10)
    for task in tasks_k[:2]:
        method_k.learn(task, ctx_k)
    assert len(method_k.buffer) == 10


def test_bad_inputs_and_options_fail_clearly():
    # standardised inputs (outside [0, 1]) are refused before any training
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    standardised = benchmarks.from_tensors(x, torch.arange(32) % 2, classes_per_task=1, scenario="class")
    method = create("dgmw", standardised.info(), **TINY)
    with pytest.raises(ConfigError, match="normalize=false"):
        method.learn(standardised.tasks[0], Context(generator=torch.Generator().manual_seed(0)))
    bench = synthetic_benchmark(n_tasks=2, classes_per_task=1, per_class=8)
    with pytest.raises(ConfigError, match="real_ratio"):
        create("dgmw", bench.info(), real_ratio=2.0)
    with pytest.raises(ConfigError, match="mode"):
        PlasticGenerator("channel")
    with pytest.raises(ValueError):
        conditioned_noise(torch.tensor([0]), nz=4, n_labels=10)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_discriminator_outputs_score_and_logits(norm):
    d = ACDiscriminator(channels=3, n_labels=7, ndf=4, size=32, norm=norm)
    score, logits = d(torch.randn(5, 3, 32, 32))
    assert score.shape == (5,) and logits.shape == (5, 7)
    assert d.score(torch.ones(2, 3, 32, 32)).shape == (2,)
    with pytest.raises(ConfigError, match="norm"):
        ACDiscriminator(channels=1, n_labels=2, norm="group")
    z = conditioned_noise(torch.tensor([2, 0]), nz=8, n_labels=3, noise=torch.ones(2, 8))
    assert z[0, :3].tolist() == [0, 0, 1] and z[1, :3].tolist() == [1, 0, 0] and bool((z[:, 3:] == 1).all())


def test_mnist_short_run_keeps_old_digit_generation(mnist_root):
    opts = {"classes_per_task": 1, "n_tasks": 2, "train_per_class": 200, "test_per_class": 50}
    bench = benchmarks.build("split-mnist", "class", 0, str(mnist_root), **opts)
    method = create("dgmw", bench.info(), iterations=6, ndf=8, batch_size=32)
    ctx = Context(generator=torch.Generator().manual_seed(0))
    tasks = list(bench)
    method.learn(tasks[0], ctx)
    noise = torch.randn(4, method.config.nz, generator=torch.Generator().manual_seed(3))
    label = torch.full((4,), tasks[0].labels[0], dtype=torch.long)
    before = method.generate(label, noise=noise)
    method.learn(tasks[1], ctx)
    assert torch.equal(method.generate(label, noise=noise), before)
    assert before.shape == (4, 1, 32, 32)


# ------------------------------------------------------------------------------ issue 23: schedule, extensions

def _mask_log(mode: str, **overrides) -> list[dict]:
    """Every step's logged mask statistics of one task (32 samples, batch 2: 16 steps per epoch, 4 epochs)."""
    import io
    import json

    method, tasks, _ = _learn("dgmw", n_tasks=1, batch_size=2, iterations=64, mask_schedule=mode, **overrides)
    sink = io.StringIO()
    ctx = Context(generator=torch.Generator().manual_seed(0), log_every=1, _log_file=sink)
    method.learn(tasks[0], ctx)
    return [r for r in map(json.loads, sink.getvalue().splitlines()) if "mask_sharpness" in r]


def test_budget_mask_schedule_keeps_masks_changing_after_the_first_epoch():
    # old reading (Eq. 3 over data epochs, embeddings at the generator's lr): masks are 0.5 for the whole first
    # epoch and nearly binary right after it (mean |m - 0.5| > 0.46 of at most 0.5)
    frozen = {r["step"]: r for r in _mask_log("epochs", lambda_ru=1.0)}
    per_epoch = min(k for k, r in frozen.items() if r["mask_sharpness"] > 0.1)  # the second epoch's first step
    assert 8 <= per_epoch <= 16 and frozen[per_epoch]["mask_sharpness"] > 0.46
    # new default: soft after the first epoch, and the values keep moving until the end of the task
    live = {r["step"]: r for r in _mask_log("budget", lambda_ru=1.0)}
    first, last = live[per_epoch], live[63]
    assert 0.1 < first["mask_sharpness"] < 0.45
    assert last["mask_sharpness"] - first["mask_sharpness"] > 0.05
    later = [live[k]["mask_mean"] for k in range(per_epoch, 64)]
    assert len({round(m, 6) for m in later}) == len(later)  # a new mean mask value at every step


EXTENSIONS = [{"classifier_ema": 0.9}, {"consolidation_steps": 5}, {"pseudo_selection": True, "select_every": 2}]


@pytest.mark.parametrize("option", EXTENSIONS, ids=lambda o: next(iter(o)))
def test_classifier_extensions_leave_the_generator_and_critic_untouched(option):
    def trained(**extra):
        method, tasks, ctx = _learn("dgmw", iterations=8, **extra)
        for task in tasks:
            method.learn(task, ctx)
        return method, tasks

    plain, tasks = trained(**PAPER_CLASSIFIER)
    other, _ = trained(**{**PAPER_CLASSIFIER, **option})
    noise = torch.randn(12, plain.config.nz, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat_interleave(4)
    assert torch.equal(plain.generate(labels, noise=noise), other.generate(labels, noise=noise))
    for a, b in zip(plain.generator.state_dict().values(), other.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(plain.discriminator.state_dict().values(), other.discriminator.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert plain.classifier is None and other.classifier is not None
    x = torch.cat([t.test.inputs() for t in tasks])
    assert not torch.equal(plain.predict(x), other.predict(x))  # only the classifier that predicts changed


def test_rerunning_the_last_task_with_classifier_options_gives_the_whole_runs_row(tmp_path):
    # what docs/dgm.md's re-runs of task 10 (bench/dgm_task_from_checkpoint.py) rest on
    bench = synthetic_benchmark(n_tasks=3, classes_per_task=1, per_class=32)
    base = {**TINY, **PAPER_CLASSIFIER, "iterations": 8, "select_every": 3}
    changed = {"classifier_ema": 0.9, "pseudo_selection": True, "consolidation_steps": 5}
    runner.run("dgmw", bench, config=base, out=tmp_path / "run", keep_checkpoints=True, quiet=True)
    whole = runner.run("dgmw", bench, config={**base, **changed}, quiet=True)
    model, _, _ = rerun_task(tmp_path / "run", 3, {k: str(v) for k, v in changed.items()}, benchmark=bench)
    row = [runner.evaluate(model, t, bench.info(), 2)["accuracy"] for t in bench.tasks]
    assert row == whole["accuracy"][2]
    assert whole["accuracy"][2] != runner.run("dgmw", bench, config=base, quiet=True)["accuracy"][2]
    (tmp_path / "run" / "checkpoints" / "task-1.pt").unlink()
    with pytest.raises(ConfigError, match=r"task-1\.pt is missing"):
        rerun_task(tmp_path / "run", 2, benchmark=bench)


def test_selection_probes_measure_without_changing_the_run(tmp_path):
    bench = synthetic_benchmark(n_tasks=3, classes_per_task=1, per_class=32)
    off = runner.run("dgmw", bench, config={**TINY, **PAPER_CLASSIFIER, "iterations": 8, "select_every": 0},
                     quiet=True)
    on = runner.run("dgmw", bench, config={**TINY, **PAPER_CLASSIFIER, "iterations": 8, "select_every": 3}, quiet=True,
                    out=tmp_path / "run")
    assert on["accuracy"] == off["accuracy"] and off["report"]["selection"] == []
    readings = on["report"]["selection"]
    assert [r["task"] for r in readings] == [1, 2, 3]
    assert [c[0] for c in readings[0]["curve"]] == [3, 6, 8]  # every 3 steps and the last
    for r, row in zip(readings, on["accuracy"], strict=True):
        assert r["A_last"] == pytest.approx(sum(row) / len(row))  # the subsample holds the whole test split here
        assert min(c[1] for c in r["curve"]) <= r["A_averaged"] <= max(c[1] for c in r["curve"])
        assert r["A_released_selected"] == max(r["curve"], key=lambda c: c[2])[1]
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"probe_val_acc"' in log and '"event": "selection"' in log
