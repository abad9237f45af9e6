"""The runner: results.json contract, determinism, checkpoints, resume, overwrite protection, evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from forgetless import methods, runner
from forgetless.benchmarks.base import Benchmark, Split, Task
from forgetless.errors import ConfigError, RunExistsError
from forgetless.methods.base import Method

from conftest import synthetic_benchmark

DESIGN_FIELDS = {"method", "benchmark", "scenario", "seed", "config", "tasks", "accuracy", "final_accuracy",
                 "average_incremental_accuracy", "forgetting", "bwt", "task_inference_accuracy", "storage",
                 "macs_per_sample", "time", "versions"}


def _run(tmp_path=None, seed=0, scenario="class", method="finetune", overrides=None, **kw):
    bench = synthetic_benchmark(scenario, n_tasks=3, per_class=40)
    out = None if tmp_path is None else tmp_path / "out"
    config = {"epochs": 2, "batch_size": 16, "hidden": [32], **(overrides or {})}
    return runner.run(method, bench, seed=seed, config=config, out=out, quiet=True, **kw)


def test_results_json_has_the_design_fields(tmp_path):
    result = _run(tmp_path)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(on_disk) >= DESIGN_FIELDS and on_disk["complete"] is True
    assert on_disk["accuracy"] == result["accuracy"]
    assert [len(r) for r in result["accuracy"]] == [1, 2, 3]
    assert result["final_accuracy"] == pytest.approx(sum(result["accuracy"][-1]) / 3)
    assert set(result["time"]) == {"train_seconds", "per_task_seconds", "eval_seconds", "train_cpu_seconds",
                                   "per_task_cpu_seconds"}
    assert len(result["time"]["per_task_seconds"]) == 3 == len(result["time"]["per_task_cpu_seconds"])
    assert result["time"]["train_cpu_seconds"] == pytest.approx(sum(result["time"]["per_task_cpu_seconds"]))
    assert set(result["versions"]) == {"forgetless", "torch", "python"}
    assert result["macs_per_sample"] == 64 * 32 + 32 * 6
    assert result["config"]["hidden"] == [32] and result["tasks"][1]["classes"] == [2, 3]
    log = (tmp_path / "out" / "log.jsonl").read_text().splitlines()
    assert sum('"evaluation"' in line for line in log) == 3
    assert (tmp_path / "out" / "checkpoints" / "task-3.pt").is_file()
    assert not (tmp_path / "out" / "checkpoints" / "task-2.pt").exists()  # only the latest is kept


def _losses(path):
    return [r["loss"] for r in map(json.loads, (path / "out" / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = _run(tmp_path / "a", seed=5)
    b = _run(tmp_path / "b", seed=5)
    _run(tmp_path / "c", seed=6)
    assert a["accuracy"] == b["accuracy"]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _losses(tmp_path / "a") != _losses(tmp_path / "c")


def _crash_finetune_at(monkeypatch, task_index: int):
    """Make finetune's learn() stop like a killed process when it reaches ``task_index``; returns the original."""
    original = methods.METHODS["finetune"].cls.learn

    def crash(self, task, ctx):
        if ctx.task_index == task_index:
            raise KeyboardInterrupt
        return original(self, task, ctx)

    monkeypatch.setattr(methods.METHODS["finetune"].cls, "learn", crash)
    return original


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    reference = _run(seed=3)
    original = _crash_finetune_at(monkeypatch, task_index=2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, seed=3)
    partial = json.loads((tmp_path / "out" / "results.json").read_text())
    assert partial["complete"] is False and len(partial["accuracy"]) == 2
    monkeypatch.setattr(methods.METHODS["finetune"].cls, "learn", original)
    with pytest.raises(RunExistsError, match="--resume"):
        _run(tmp_path, seed=3)
    resumed = _run(tmp_path, seed=3, resume=True)
    assert resumed["accuracy"] == reference["accuracy"]
    assert len(resumed["time"]["per_task_seconds"]) == 3


def test_finished_runs_are_not_overwritten(tmp_path):
    _run(tmp_path)
    with pytest.raises(RunExistsError, match="--overwrite"):
        _run(tmp_path)
    again = _run(tmp_path, overwrite=True)
    assert again["complete"]


def test_resume_refuses_a_different_configuration(tmp_path, monkeypatch):
    original = _crash_finetune_at(monkeypatch, task_index=1)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, seed=1)
    monkeypatch.setattr(methods.METHODS["finetune"].cls, "learn", original)
    with pytest.raises(ConfigError, match="different run"):
        _run(tmp_path, seed=2, resume=True)


def test_resume_accepts_an_option_added_since_the_checkpoint_only_at_its_default(tmp_path, monkeypatch):
    original = _crash_finetune_at(monkeypatch, task_index=1)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, seed=1)
    monkeypatch.setattr(methods.METHODS["finetune"].cls, "learn", original)
    ckpt = tmp_path / "out" / "checkpoints" / "task-1.pt"
    state = torch.load(ckpt, weights_only=True)  # format 2 holds no pickled objects
    del state["identity"]["config"]["grad_clip"]  # as written by a version without that option
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="different run"):
        _run(tmp_path, seed=1, resume=True, overrides={"grad_clip": 5.0})
    assert _run(tmp_path, seed=1, resume=True)["complete"]


class _FixedLogits(Method):
    """Predicts fixed logits favouring high labels; 'infers' task 0 for every sample."""

    name = "fixed"

    def learn(self, task, ctx):
        pass

    def predict(self, x, task_id=None):
        return torch.arange(self.info.n_outputs, dtype=torch.float32).expand(len(x), -1).clone()

    def infer_task(self, x):
        return torch.zeros(len(x), dtype=torch.long)


def _two_task_bench(scenario):
    def task(t):
        labels = [0, 1] if scenario == "domain" else [2 * t, 2 * t + 1]
        x = torch.zeros(4, 3)
        y = torch.tensor([labels[0], labels[1], labels[1], labels[1]])
        s = Split(x, y)
        return Task(t, [2 * t, 2 * t + 1], labels, s, Split(x[:0], y[:0]), s)

    return Benchmark("two", scenario, [task(0), task(1)], (3,), 2 if scenario == "domain" else 4)


@pytest.mark.parametrize("scenario,expected", [
    ("task", [[0.75], [0.75, 0.75]]),  # argmax within each task's labels: the higher label of the pair
    ("class", [[0.75], [0.0, 0.75]]),  # after task 2 every sample is predicted as label 3
    ("domain", [[0.75], [0.75, 0.75]]),
])
def test_evaluation_restricts_the_argmax_by_scenario(scenario, expected):
    bench = _two_task_bench(scenario)
    result = runner.run(_FixedLogits(bench.info()), bench, quiet=True)
    assert result["accuracy"] == expected
    if scenario == "task":
        assert result["task_inference_accuracy"] is None
    else:
        assert result["task_inference"] == [[1.0], [1.0, 0.0]]
        assert result["task_inference_accuracy"] == 0.5


def test_regression_benchmarks_report_mse():
    x = torch.linspace(-1, 1, 20).view(-1, 1)
    tasks = [Task(t, [], [], Split(x, 2 * x + t), Split(x[:0], x[:0]), Split(x, 2 * x + t)) for t in range(2)]
    bench = Benchmark("line", "task", tasks, (1,), 1, kind="regression")

    class Zero(Method):
        def learn(self, task, ctx):
            pass

        def predict(self, x, task_id=None):
            return torch.zeros_like(x)

    result = runner.run(Zero(bench.info()), bench, quiet=True)
    expected0 = float(((2 * x) ** 2).mean())
    assert result["metric"] == "mse" and result["accuracy"] is None
    assert result["mse"][0][0] == pytest.approx(expected0)
    assert result["final_mse"] == pytest.approx((expected0 + float(((2 * x + 1) ** 2).mean())) / 2)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        runner.resolve_device("cuda")


def test_eval_future_gives_the_full_matrix_and_forward_transfer():
    bench = synthetic_benchmark("class", n_tasks=3, per_class=40)
    result = runner.run("finetune", bench, config={"epochs": 1, "batch_size": 16, "hidden": [16]}, quiet=True,
                        evaluate_future=True)
    acc, ref = result["accuracy"], result["reference_accuracy"]
    assert [len(r) for r in acc] == [3, 3, 3] and len(ref) == 3
    assert result["fwt"] == pytest.approx(((acc[0][1] - ref[1]) + (acc[1][2] - ref[2])) / 2)
    assert result["final_accuracy"] == pytest.approx(sum(acc[-1]) / 3)
    plain = runner.run("finetune", bench, config={"epochs": 1, "batch_size": 16, "hidden": [16]}, quiet=True)
    assert plain["fwt"] is None and plain["accuracy"] == [row[: i + 1] for i, row in enumerate(acc)]


def test_results_record_their_provenance_and_are_readable_by_the_group(tmp_path, mnist_root):
    import os
    import stat

    out = tmp_path / "run"
    result = runner.run("finetune", "split-mnist", scenario="task", config={"iterations": 2, "hidden": [8]},
                        bench_options={"n_tasks": 1, "train_per_class": 20, "test_per_class": 10}, out=out,
                        data_root=str(mnist_root), quiet=True)
    origin = result["provenance"]
    assert set(origin) >= {"git", "forgetless", "argv", "started", "host", "torch_threads", "device", "data_root",
                           "data_files"}
    assert origin["device"] == "cpu" and origin["torch_threads"] >= 1 and origin["data_root"] == str(mnist_root)
    assert origin["data_files"]["mnist/train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    if origin["git"] is not None:  # run from a checkout
        assert len(origin["git"]["commit"]) == 40 and isinstance(origin["git"]["dirty"], bool)
    expected = 0o666 & ~_umask()
    for name in ("results.json", "checkpoints/task-1.pt"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == expected, name


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
