"""--amp bf16: autocast really runs, training under it learns, the methods that promise unchanged old tasks
keep that promise under it, unsafe methods refuse in one line, and a run's precision is part of its identity."""

from __future__ import annotations

import json

import pytest
import torch

from forgetless import cli, methods, precision, runner
from forgetless.errors import ConfigError

from conftest import learn_task_by_task, synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
PROMISES = {  # methods whose old tasks' predictions must stay bit-identical, with small budgets
    "hat": {"epochs": 4, "hidden": (24, 24), "lr_patience": 2},
    "packnet": {"epochs": 2, "retrain_epochs": 1, "hidden": (24, 24), "batch_size": 32, "prune_last": True},
    "piggyback": {"epochs": 2, "pretrain_epochs": 2, "hidden": (24, 24), "batch_size": 32},
    "ccgn": {"width": 16, "epochs": 4, "batch_size": 16, "lr": 0.01, "sparsity_patience": 2, "gate_bias": 2.0,
             "lambda_s": 3.0, "noise_free_epochs": 0},
}


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark("task", n_tasks=3, classes_per_task=2, per_class=40)


def test_autocast_runs_the_layers_in_bfloat16_only_when_asked(bench):
    seen = []
    model = methods.create("finetune", bench.info(), epochs=1, hidden=(16,))
    model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    for amp in ("none", "bf16"):
        with precision.autocast(CPU, amp):
            model(bench.tasks[0].test.inputs()[:4])
    assert seen == [torch.float32, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # parameters stay float32


def test_training_under_bf16_learns_as_float32_does(bench):
    """The autocast region spans a whole task: with its weight cache on, every step would reuse the first
    step's bfloat16 weights and nothing would be learned (loss flat at ln 2)."""
    accuracy = {}
    for amp in ("none", "bf16"):
        torch.manual_seed(0)
        model = methods.create("finetune", bench.info(), epochs=5, hidden=(32,), batch_size=16)
        with precision.autocast(CPU, amp):
            history = learn_task_by_task(model, bench)
        task = bench.tasks[-1]
        accuracy[amp] = (history[-1][-1].argmax(1) == task.test.y).float().mean().item()
    assert accuracy["none"] > 0.9
    assert accuracy["bf16"] > 0.9
    assert abs(accuracy["bf16"] - accuracy["none"]) < 0.05


@pytest.mark.parametrize("name", list(PROMISES))
def test_old_tasks_stay_bit_identical_under_bf16(name, bench):
    torch.manual_seed(0)
    model = methods.create(name, bench.info(), **PROMISES[name])
    with precision.autocast(CPU, "bf16"):
        history = learn_task_by_task(model, bench)
    assert history[0][0].dtype == torch.bfloat16 or name == "ccgn"  # ccgn's gated heads compute in float32
    for j in range(len(bench.tasks)):
        for later in history[j + 1:]:
            assert torch.equal(later[j], history[j][j]), f"{name}: task {j} changed under bf16"


@pytest.mark.parametrize(("name", "config", "reason"), [
    ("hnet-r", {}, "VAE replay"),
    ("hnet-tir", {}, "VAE replay"),
    ("dgmw", {}, "gradient penalty"),
    ("dgr", {}, "VAE"),
    ("ccgn", {"memory": "generative"}, "memory=generative"),
])
def test_unsafe_methods_refuse_before_anything_runs(name, config, reason):
    with pytest.raises(ConfigError, match=reason):
        runner.check_options(name, "split-digits", "class", config, None, amp="bf16")
    runner.check_options(name, "split-digits", "class", config, None, amp="none")


def test_bad_amp_values_and_refusals_are_one_line_cli_errors(tmp_path, capsys):
    tiny = ["--benchmark", "split-digits", "--set", "iterations=2", "--out", str(tmp_path / "r")]
    assert cli.main(["run", "-m", "finetune", *tiny, "--amp", "fp8"]) == 2
    assert "--amp 'fp8' is not valid; valid: none, bf16" in capsys.readouterr().err
    assert cli.main(["run", "-m", "hnet-r", *tiny, "--amp", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not run with --amp bf16" in err
    assert not (tmp_path / "r").exists()  # refused before the run directory was made
    assert cli.main(["compare", "--methods", "finetune,dgr", "--benchmark", "split-digits", "--amp", "bf16",
                     "--out", str(tmp_path / "c")]) == 2
    assert "'dgr' does not run with --amp bf16" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_precision_is_recorded_and_part_of_the_runs_identity(tmp_path):
    kw = dict(scenario="task", config={"iterations": 3, "hidden": (8,)}, quiet=True, device="cpu")
    out = tmp_path / "bf16"
    result = runner.run("finetune", "split-digits", out=out, amp="bf16", **kw)
    assert result["amp"] == "bf16"
    assert json.loads((out / "results.json").read_text())["amp"] == "bf16"
    runner.check_same_run(result, "finetune", "split-digits", amp="bf16", **kw)
    with pytest.raises(ConfigError, match="amp"):  # a bf16 run is not reused for a float32 request
        runner.check_same_run(result, "finetune", "split-digits", **kw)
    plain = runner.run("finetune", "split-digits", out=tmp_path / "plain", **kw)
    assert plain["amp"] == "none"
    with pytest.raises(ConfigError, match="amp"):
        runner.check_same_run(plain, "finetune", "split-digits", amp="bf16", **kw)
    # resuming a finished bf16 run's directory as float32 is another run
    (out / "results.json").write_text(json.dumps({**result, "complete": False}))
    with pytest.raises(ConfigError, match="different run"):
        runner.run("finetune", "split-digits", out=out, resume=True, **kw)


def test_hnet_under_bf16_keeps_its_regulariser_in_float32_and_old_tasks():
    """The target network computes in bfloat16; the output regulariser (targets, penalty, its gradient) in
    float32, since it holds old tasks' generated weights to differences bfloat16 would round away."""
    from forgetless.nn.hnet import OutputRegularizer

    torch.manual_seed(0)
    bench = synthetic_benchmark("task", n_tasks=2)
    small = dict(iterations=60, batch_size=32, hidden=(32,), hnet_hidden=(10, 10), chunk_size=400, emb_dim=8,
                 chunk_emb_dim=8, lr=5e-3)
    model = methods.create("hnet", bench.info(), **small)
    with precision.autocast(CPU, "bf16"):
        history = learn_task_by_task(model, bench)
    assert history[0][0].dtype == torch.bfloat16  # the target network did run in bfloat16
    first = [h[0][:, :2].argmax(1) for h in history]  # task 0's own units, after task 0 and after task 1
    assert torch.equal(first[1], first[0])  # task 0's decisions kept
    assert (first[1] == bench.tasks[0].test.y).float().mean() > 0.9
    reg = OutputRegularizer(beta=0.01)
    with precision.autocast(CPU, "bf16"):
        reg.begin_task(model.hnet)
        inside = reg.penalty(model.hnet)
    assert reg.targets(model.hnet).dtype == torch.float32 and inside.dtype == torch.float32
    assert torch.equal(inside, reg.penalty(model.hnet))  # the same float32 number as without autocast
