"""The hypernetwork methods: hnet (HNET / HNET+ENT), hnet-tir (HNET+TIR), hnet-r (HNET+R) and the toy regression."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from forgetless import benchmarks, checkpoint, runner
from forgetless.errors import ConfigError
from forgetless.methods import Context, create
from forgetless.training.task_inference import output_entropy

from conftest import synthetic_benchmark

SMALL = dict(iterations=60, batch_size=32, hidden=(32,), hnet_hidden=(10, 10), chunk_size=400, emb_dim=8,
             chunk_emb_dim=8, lr=5e-3)
SMALL_VAE = dict(vae_enc_hidden=(32,), vae_dec_hidden=(32,), vae_latent=4, vae_condition_dim=4,
                 vae_hnet_hidden=(10,), vae_chunk_size=500, vae_emb_dim=8, vae_chunk_emb_dim=8)


def _first(bench, k):
    """The benchmark cut after its first ``k`` tasks (to look at a method between tasks)."""
    return type(bench)(bench.name, bench.scenario, bench.tasks[:k], bench.input_shape, bench.n_outputs)


def _learn_all(method, bench, start=0):
    for i, task in enumerate(bench.tasks[start:], start):
        method.learn(task, Context(generator=torch.Generator().manual_seed(i), task_index=i, n_tasks=len(bench)))
    method.eval()


def _accuracy(method, bench, task_id=None):
    info = bench.info()
    correct = total = 0
    for t, task in enumerate(bench.tasks):
        x, y = task.test.inputs(), task.test.y
        out = method.predict(x, task_id=t if info.scenario == "task" else task_id)
        labels = torch.as_tensor(info.active_labels(t if info.scenario == "task" else len(bench) - 1))
        correct += int((labels[out[:, labels].argmax(1)] == y).sum())
        total += len(y)
    return correct / total


def test_hnet_task_il_learns_and_old_embeddings_stay_fixed():
    torch.manual_seed(0)
    bench = synthetic_benchmark("task", n_tasks=3)
    method = create("hnet", bench.info(), **SMALL)
    _learn_all(method, _first(bench, 1))
    first = method.hnet.embeddings[0].detach().clone()
    with torch.no_grad():
        before = method.predict(bench.tasks[0].test.inputs(), task_id=0)[:, :2]  # task 0's own units
    _learn_all(method, bench, start=1)
    assert torch.equal(method.hnet.embeddings[0], first)  # stored embeddings never change
    assert not any(e.requires_grad for e in method.hnet.embeddings)
    with torch.no_grad():
        after = method.predict(bench.tasks[0].test.inputs(), task_id=0)[:, :2]
    assert torch.equal(before.argmax(1), after.argmax(1))
    assert _accuracy(method, bench) > 0.95
    storage = method.storage()
    assert storage["task_embedding_bytes"] == 3 * 8 * 4
    assert 0 < storage["compression_ratio"] == method.report()["compression_ratio"]


def test_hnet_ent_infers_the_task_by_lowest_entropy_in_class_il():
    torch.manual_seed(0)
    bench = synthetic_benchmark("class", n_tasks=3)
    method = create("hnet", bench.info(), **SMALL)
    assert method.config.train_units == "own"  # the authors' HNET+ENT trains each task on its own head
    _learn_all(method, bench)
    x = torch.cat([t.test.inputs() for t in bench.tasks])
    owner = torch.cat([torch.full((len(t.test),), i) for i, t in enumerate(bench.tasks)])
    with torch.no_grad():
        out = method.predict(x)
        chosen = method.infer_task(x)
        ent = output_entropy(method.all_task_outputs(x), method.task_masks, method.config.temperature)
    assert torch.equal(chosen, ent.argmin(0))
    finite = torch.isfinite(out)
    masks = method.task_masks[chosen]
    assert torch.equal(finite, masks)  # only the chosen task's head answers
    # Heads are disjoint in class-IL: a sample can only be right if its task was inferred.
    correct_task = chosen == owner
    assert _accuracy(method, bench) <= correct_task.float().mean() + 1e-6


def test_train_units_seen_trains_against_earlier_heads_and_answers_over_seen_units():
    torch.manual_seed(0)
    bench = synthetic_benchmark("class", n_tasks=3)
    method = create("hnet", bench.info(), **SMALL, train_units="seen")
    for scenario in ("task", "domain"):  # own units by default in every scenario, and for hnet-tir
        assert create("hnet", synthetic_benchmark(scenario, n_tasks=2).info(), **SMALL).config.train_units == "own"
    assert create("hnet-tir", bench.info(), **SMALL).config.train_units == "own"
    session = method.start_task(0)
    assert torch.equal(session["keep"], method.task_masks[0])
    method.finish_task(session)
    session = method.start_task(1)  # the softmax of task 1's loss covers tasks 0 and 1
    assert torch.equal(session["keep"], method.task_masks[0] | method.task_masks[1])
    method.finish_task(session)
    x = bench.tasks[0].test.inputs()
    with torch.no_grad():
        out = method.predict(x)
    assert torch.equal(torch.isfinite(out), (method.task_masks[0] | method.task_masks[1]).expand_as(out))
    with pytest.raises(ConfigError, match="train_units"):
        create("hnet", bench.info(), **SMALL, train_units="all")


def test_entropy_is_computed_over_each_tasks_own_units():
    bench = synthetic_benchmark("class", n_tasks=2)
    method = create("hnet", bench.info(), **SMALL)
    outputs = torch.tensor([[[2.0, 0.0, 9.0, 9.0]], [[5.0, 5.0, 0.0, 3.0]]])  # [task, sample, unit]
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    q = torch.softmax(torch.tensor([0.0, 3.0]), 0)
    expected = torch.stack([-(p * p.log()).sum(), -(q * q.log()).sum()]).unsqueeze(1)
    torch.testing.assert_close(output_entropy(outputs, method.task_masks, method.config.temperature), expected)
    p2 = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    at_two = output_entropy(outputs, method.task_masks, temperature=2.0)
    assert at_two[0, 0].item() == pytest.approx(-(p2 * p2.log()).sum().item())


def test_hnet_domain_il_uses_the_shared_head():
    torch.manual_seed(0)
    bench = synthetic_benchmark("domain", n_tasks=2)
    method = create("hnet", bench.info(), **SMALL)
    assert method.target.n_weights == 64 * 32 + 32 + 32 * 2 + 2  # one 2-unit head for every task
    _learn_all(method, bench)
    with torch.no_grad():
        out = method.predict(bench.tasks[1].test.inputs())
    assert out.shape[1] == 2 and torch.isfinite(out).all()


def test_hnet_tir_trains_task_inference_from_protected_replay():
    torch.manual_seed(0)
    bench = synthetic_benchmark("class", n_tasks=3)
    method = create("hnet-tir", bench.info(), **SMALL, **SMALL_VAE)
    _learn_all(method, bench)
    assert method.replay.n_tasks == 2  # no replay model is trained on the last task
    x = torch.cat([t.test.inputs() for t in bench.tasks])
    owner = torch.cat([torch.full((len(t.test),), i) for i, t in enumerate(bench.tasks)])
    with torch.no_grad():
        chosen = method.infer_task(x)
        assert torch.equal(chosen, method.task_inference(x)[:, :3].argmax(1))
        samples, tasks = method.replay.replay(10, 2, torch.Generator().manual_seed(0))
    assert samples.shape == (10, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert tasks.tolist() == [0] * 5 + [1] * 5
    assert (chosen == owner).float().mean() > 0.6
    storage = method.storage()
    assert storage["replay_bytes"] > 0 and storage["task_inference_bytes"] > 0


def test_hnet_tir_in_task_il_needs_no_replay_model():
    bench = synthetic_benchmark("task", n_tasks=2)
    method = create("hnet-tir", bench.info(), **SMALL, **SMALL_VAE)
    assert not method.inference_needed and not hasattr(method, "replay")


def test_replay_decoder_is_protected_by_its_hypernetwork():
    torch.manual_seed(0)
    bench = synthetic_benchmark("class", n_tasks=3)
    method = create("hnet-r", bench.info(), iterations=80, batch_size=32, hidden=(32,), **SMALL_VAE,
                    vae_beta=1.0)
    _learn_all(method, _first(bench, 1))
    hnet = method.replay.hnet
    with torch.no_grad():
        before = hnet(hnet.embeddings[0]).clone()
    _learn_all(method, bench, start=1)
    with torch.no_grad():
        after = hnet(hnet.embeddings[0])
    assert ((after - before).norm() / before.norm()) < 0.05
    assert _accuracy(method, bench) > 0.6


def test_hnet_r_learns_with_replay_in_every_scenario():
    for scenario in ("task", "domain", "class"):
        torch.manual_seed(0)
        bench = synthetic_benchmark(scenario, n_tasks=2)
        method = create("hnet-r", bench.info(), iterations=30, batch_size=32, hidden=(32,), **SMALL_VAE)
        _learn_all(method, bench)
        assert method._previous == []  # the frozen copy is dropped after each task
        assert method.replay.n_tasks == 1
        if scenario == "task":
            assert _accuracy(method, bench) > 0.9


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


@pytest.mark.parametrize(("scenario", "pad"), [("task", "probability"), ("class", "probability"), ("class", "logit")])
def test_hnet_r_distillation_targets(scenario, pad, monkeypatch):
    """Soft targets at T = 2 from the previous classifier: on the replayed task's head in task-IL; in class-IL
    over the old labels, padded for the new ones with zero probability or zero logits, against the student over
    every label seen."""
    bench = synthetic_benchmark(scenario, n_tasks=3)
    method = create("hnet-r", bench.info(), hidden=(8,), distill_pad=pad, **SMALL_VAE)
    teacher = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.5, -1.0, 2.0, 0.0, 1.0, 1.0]])
    student = torch.tensor([[0.0, 1.0, 0.0, 2.0, -1.0, 3.0], [1.0, 0.0, -2.0, 1.0, 0.0, 0.5]])
    x = torch.zeros(2, 1, 8, 8)
    monkeypatch.setattr(method.replay, "replay", lambda n, upto, generator=None: (x, torch.tensor([0, 1])))
    monkeypatch.setattr(method, "forward", lambda inputs: student)
    method._previous = [_Fixed(teacher)]
    ctx = Context(task_index=2, n_tasks=3)
    kd = method.extra_loss(None, None, bench.tasks[2], ctx) / method.config.replay_weight
    T = 2.0
    if scenario == "task":  # sample 0 on head 0 (labels 0, 1), sample 1 on head 1 (labels 2, 3)
        heads = [[0, 1], [2, 3]]
        terms = [-(torch.softmax(teacher[i, h] / T, 0) * torch.log_softmax(student[i, h] / T, 0)).sum()
                 for i, h in enumerate(heads)]
    elif pad == "probability":  # teacher over labels 0..3 (tasks 0, 1), student over 0..5
        p = torch.cat([torch.softmax(teacher[:, :4] / T, 1), torch.zeros(2, 2)], 1)
        terms = list(-(p * torch.log_softmax(student / T, 1)).sum(1))
    else:  # the teacher's logits of labels 4, 5 (task 2) replaced by 0 before the softmax over 0..5
        p = torch.softmax(torch.cat([teacher[:, :4], torch.zeros(2, 2)], 1) / T, 1)
        terms = list(-(p * torch.log_softmax(student / T, 1)).sum(1))
    assert kd.item() == pytest.approx((torch.stack(terms).mean() * T**2).item(), rel=1e-5)


def test_runs_checkpoint_and_report_through_the_runner(tmp_path):
    bench = synthetic_benchmark("class", n_tasks=2)
    result = runner.run("hnet-tir", bench, scenario="class", config={**SMALL, **SMALL_VAE, "iterations": 20},
                        out=tmp_path / "run", quiet=True)
    assert result["task_inference_accuracy"] is not None
    assert result["storage"]["compression_ratio"] > 0 and result["report"]["n_chunks"] >= 1
    method = checkpoint.read(tmp_path / "run" / "checkpoints" / "task-2.pt")["method"]
    assert method._eval_cache is None and method.regularizer.embeddings is None  # nothing per-step is pickled
    x = bench.tasks[0].test.inputs()
    with torch.no_grad():
        assert torch.isfinite(method.predict(x)).any()


def test_paper_defaults_per_benchmark():
    split = create("hnet", benchmarks.build("split-digits", "task", 0).info())
    assert (split.config.chunk_size, split.config.emb_dim, split.config.beta, split.config.lr,
            split.config.iterations) == (42000, 96, 0.01, 1e-3, 2000)
    toy = create("hnet", benchmarks.build("toy-regression", "task", 0).info())
    assert toy.target.n_weights == 141 and toy.hnet.n_chunks == 1  # full hypernetwork, sigmoid 10-10 target
    assert (toy.config.beta, toy.config.lr, toy.config.batch_size, toy.config.emb_dim) == (0.005, 0.01, 32, 2)
    from forgetless.methods.hnet import hnet_defaults
    from forgetless.methods.hnet_replay import HnetR, HnetTIR

    info = type("Info", (), {"name": "permuted-mnist", "kind": "classification"})()
    assert hnet_defaults(info)["chunk_size"] == 78000 and hnet_defaults(info)["lr"] == 1e-4
    assert HnetTIR.defaults(info)["vae_chunk_size"] == 85000 and HnetTIR.defaults(info)["tir_hidden"] == (1000, 1000)
    assert HnetR.defaults(info)["vae_dec_hidden"] == (400, 400)


def test_bad_options_are_one_line_config_errors():
    info = synthetic_benchmark("class", n_tasks=2).info()
    for bad in ({"hnet_activation": "swish"}, {"beta": -1}, {"chunk_size": -5}, {"reg_tasks": 0},
                {"target_activation": "gelu"}):
        with pytest.raises(ConfigError):
            create("hnet", info, **bad)
    with pytest.raises(ConfigError, match="vae_condition"):
        create("hnet-r", info, vae_condition="uniform")
    with pytest.raises(ConfigError, match="scenario"):
        benchmarks.build("toy-regression", "class", 0)


def test_toy_regression_regulariser_prevents_forgetting():
    """Fig. 2 on a short budget: the first two fits survive the cubic with the output regularizer and are
    destroyed without it (the paper's 4000 iterations give the docs' figure)."""
    mse = {}
    for beta in (0.005, 0.0):
        result = runner.run("hnet", "toy-regression", scenario="task", config={"beta": beta, "iterations": 400,
                                                                                "lr": 0.03}, quiet=True)
        mse[beta] = result["mse"][-1]
    assert mse[0.005][0] < 0.1 * mse[0.0][0] and mse[0.005][1] < 0.1 * mse[0.0][1]
    assert mse[0.0][2] < 0.2  # the last task is learned either way


def test_toy_plot_is_written(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from hnet_toy_figure import plot

    fits = plot(tmp_path / "toy.png", iterations=20)
    assert (tmp_path / "toy.png").stat().st_size > 10_000
    assert [f["beta"] for f in fits] == [0.005, 0.0] and len(fits[0]["curves"]) == 3


@pytest.mark.mnist
def test_first_task_outputs_stay_put_on_real_mnist_and_move_without_the_regulariser(mnist_root):
    """Acceptance: after learning a second split-MNIST task the first task's generated weights and outputs stay
    within a tight tolerance with the paper's beta, and do not with beta = 0."""
    bench = benchmarks.build("split-mnist", "task", 0, str(mnist_root), n_tasks=2, train_per_class=300,
                             test_per_class=200)
    x, y = bench.tasks[0].test.inputs(), bench.tasks[0].test.y
    drift = {}
    for beta in (0.01, 0.0):
        torch.manual_seed(0)
        method = create("hnet", bench.info(), iterations=80, beta=beta)
        _learn_all(method, _first(bench, 1))
        with torch.no_grad():
            w0, out0 = method.hnet(method.hnet.embeddings[0]).clone(), method.predict(x, task_id=0)[:, :2]
        _learn_all(method, bench, start=1)
        with torch.no_grad():
            w1, out1 = method.hnet(method.hnet.embeddings[0]), method.predict(x, task_id=0)[:, :2]
        drift[beta] = ((w1 - w0).norm() / w0.norm()).item(), (out1 - out0).abs().max().item()
        if beta > 0:
            assert (out1.argmax(1) == y).float().mean() >= (out0.argmax(1) == y).float().mean() - 0.005
    assert drift[0.01][0] < 0.15 and drift[0.01][1] < 3.0
    assert drift[0.0][0] > 0.3 and drift[0.0][1] > 8.0
