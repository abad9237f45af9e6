"""Data-parallel runs (issue 18 part 2): batch sharding, and 2-process gloo runs on real split MNIST that must
match the one-process run with the same global batch while every rank keeps the same state after each task."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forgetless import distributed, runner
from forgetless.benchmarks.base import Split
from forgetless.errors import ConfigError
from forgetless.training import Context

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
BENCH = {"n_tasks": 2, "train_per_class": 100, "test_per_class": 50}
# Tiny budgets; epoch-based methods keep 2-3 epochs so their per-epoch decisions (HAT's lr patience, SpaceNet's
# rewiring, CCGN's sparsity/noise phases and model selection) run.
METHODS = {
    "finetune": {"iterations": 20, "batch_size": 64},
    "ewc": {"iterations": 20, "batch_size": 64},
    "hat": {"epochs": 3, "batch_size": 64},
    "packnet": {"iterations": 40, "pretrain_iterations": 10, "retrain_iterations": 20, "batch_size": 64},
    "piggyback": {"iterations": 20, "pretrain_iterations": 10, "batch_size": 64},
    "hnet": {"iterations": 20, "batch_size": 64},
    "spacenet": {"epochs": 2, "batch_size": 64},
    "ccgn": {"epochs": 5, "sparsity_patience": 2, "noise_free_epochs": 1, "batch_size": 64},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(SRC), os.environ.get("PYTHONPATH", "")])}


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), *args]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _same_on_ranks(digests: Path, n_tasks: int) -> None:
    for t in range(n_tasks):
        r0, r1 = ((digests / f"rank{r}-task{t}.txt").read_text() for r in (0, 1))
        assert r0 == r1, f"task {t}: ranks differ\n{r0}{r1}"


def _close(a: list[list[float]], b: list[list[float]], tol: float = 0.01 + 1e-9) -> bool:
    return all(abs(x - y) <= tol for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


# ------------------------------------------------------------------------------------------ unit tests

def _batches(n: int, batch_size: int, rank: int, world: int, **kw) -> list:
    split = Split(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n))
    ctx = Context(generator=torch.Generator().manual_seed(3), rank=rank, world_size=world)
    return list(ctx.batches(split, batch_size, **kw))


@pytest.mark.parametrize("n", [20, 21, 23])
def test_batches_shard_one_permutation_with_global_batch_size(n):
    one = _batches(n, 8, 0, 1, epochs=2)
    shards = [_batches(n, 8, r, 2, epochs=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(one)  # last global batches of 4, 5, 7: every rank has data
    for b, b0, b1 in zip(one, *shards, strict=True):
        assert (b0.step, b0.epoch, b0.index, b0.total) == (b1.step, b1.epoch, b1.index, b1.total)
        assert set(b0.y.tolist()).isdisjoint(b1.y.tolist())
        assert sorted(b0.y.tolist() + b1.y.tolist()) == sorted(b.y.tolist())  # together: the one-process batch
        assert b0.share + b1.share == pytest.approx(1.0)
        assert abs(len(b0.y) - len(b1.y)) <= 1


def test_batches_skip_a_last_global_batch_smaller_than_the_world():
    one = _batches(17, 8, 0, 1)  # 8, 8, 1
    two = [_batches(17, 8, r, 2) for r in (0, 1)]
    assert len(one) == 3 and len(two[0]) == len(two[1]) == 2  # the batch of 1 would leave rank 1 empty
    assert two[0][-1].per_epoch == 2 and two[0][-1].total == 2
    with pytest.raises(ConfigError, match="world size"):
        _batches(17, 1, 0, 2)


def test_unsupported_methods_refuse_under_several_ranks(monkeypatch):
    distributed.check_method("dgr")  # one process: everything runs
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"dgr.*data-parallel"):
        distributed.check_method("dgr")
    ccgn = type("M", (), {"config": type("C", (), {"memory": "generative"})()})()
    with pytest.raises(ConfigError, match="memory=generative"):
        distributed.check_method("ccgn", ccgn)
    distributed.check_method("finetune")


def test_one_process_has_no_group_and_helpers_are_no_ops():
    net = torch.nn.Linear(2, 2)
    net(torch.ones(1, 2)).sum().backward()
    before = net.weight.grad.clone()
    distributed.all_reduce_gradients(net.parameters(), 0.5)
    distributed.broadcast_module(net)
    assert not distributed.is_distributed() and torch.equal(net.weight.grad, before)
    assert distributed.broadcast_object(3) == 3 and distributed.reduce_mean(2.0) == 2.0


# ------------------------------------------------------------------------------ 2-process runs (gloo)

def test_batch_norm_over_uneven_shards_is_the_one_process_batch_norm(tmp_path):
    """Two ranks holding 5 and 4 of 9 samples: outputs, running statistics, parameter gradients and
    (share-weighted) input gradients equal those of one process normalising all 9."""
    _torchrun(str(HERE / "sync_bn_worker.py"), str(tmp_path))
    torch.manual_seed(0)
    x, target = torch.randn(9, 3, 4, 4), torch.randn(9, 3, 4, 4)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x.requires_grad_(True)
    out = bn(x)
    ((out - target) ** 3).mean().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r, got in enumerate(ranks):
        close = dict(atol=1e-5, rtol=1e-4)
        assert torch.allclose(got["out"], out.detach()[r::2], **close)
        assert torch.allclose(got["input_grad"], x.grad[r::2], **close)
        assert torch.allclose(got["weight_grad"], bn.weight.grad, **close)
        assert torch.allclose(got["bias_grad"], bn.bias.grad, **close)
        assert torch.allclose(got["running_mean"], bn.running_mean, **close)
        assert torch.allclose(got["running_var"], bn.running_var, **close)


@pytest.mark.mnist
def test_methods_data_parallel_match_one_process(mnist_root, tmp_path):
    runs = [{"method": m, "config": c, "out": str(tmp_path / m), "digests": str(tmp_path / f"{m}-digests")}
            for m, c in METHODS.items()]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    _torchrun(str(HERE / "distributed_worker.py"), str(tmp_path / "runs.json"), str(mnist_root), json.dumps(BENCH),
              timeout=600)
    far = []
    for spec in runs:
        m = spec["method"]
        two = json.loads((Path(spec["out"]) / "results.json").read_text())
        one = runner.run(m, "split-mnist", scenario="task", seed=0, config=spec["config"], bench_options=BENCH,
                         data_root=str(mnist_root), quiet=True)
        assert two["world_size"] == 2 and one["world_size"] == 1
        _same_on_ranks(Path(spec["digests"]), BENCH["n_tasks"])
        if not _close(two["accuracy"], one["accuracy"]):
            far.append((m, two["accuracy"], one["accuracy"]))
    assert not far, f"2 processes vs 1 (more than 1 point apart): {far}"


@pytest.mark.mnist
def test_cli_nproc_and_torchrun_resume(mnist_root, tmp_path):
    """``forgetless run --nproc 2``, then the same run interrupted after task 1 and resumed under torchrun
    (every rank loads the checkpoint): the same accuracy matrix, written by rank 0 alone."""
    args = ["run", "-m", "finetune", "-b", "split-mnist", "-s", "task", "--data-dir", str(mnist_root),
            "--set", "iterations=20", "--set", "batch_size=64", "-q", "--keep-checkpoints",
            *(a for k, v in BENCH.items() for a in ("--bench", f"{k}={v}"))]
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "forgetless", *args, "--out", str(out), "--nproc", "2"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("final accuracy") == 1  # rank 0 only
    full = json.loads((out / "results.json").read_text())
    assert full["world_size"] == 2 and full["complete"]
    (out / "checkpoints" / "task-2.pt").unlink()
    (out / "results.json").unlink()
    _torchrun("-m", "forgetless", *args, "--out", str(out), "--resume")
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["accuracy"] == full["accuracy"]
