"""Short runs of the mask family on real MNIST (reduced budgets), the reproduction configs and the
per-task reproduction metrics."""

from __future__ import annotations

import pytest

from forgetless import reproduce, runner
from forgetless.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = sorted(reproduce.CONFIG_DIR.glob("*.yaml"))
MASK_CONFIGS = [p for p in CONFIGS if p.stem.startswith(("masks-", "mancini2018-"))]



def test_hat_on_split_mnist_learns_and_does_not_forget(mnist_root):
    r = runner.run("hat", "split-mnist", scenario="task", seed=0, data_root=str(mnist_root), quiet=True,
                   bench_options={"n_tasks": 2, "train_per_class": 300, "test_per_class": 200},
                   config={"epochs": 15, "hidden": (100, 100)})
    assert r["final_accuracy"] >= 0.95
    assert r["forgetting"] == 0.0


def test_packnet_on_split_mnist_learns_and_does_not_forget(mnist_root):
    r = runner.run("packnet", "split-mnist", scenario="task", seed=0, data_root=str(mnist_root), quiet=True,
                   bench_options={"n_tasks": 3, "train_per_class": 200, "test_per_class": 200},
                   config={"epochs": 3, "lr": 0.01, "pretrain_epochs": 3, "retrain_epochs": 1, "hidden": (64, 64)})
    assert r["final_accuracy"] >= 0.95
    assert r["forgetting"] == 0.0
    assert 1.0 < r["storage"]["params_ratio"] < 1.1  # 2 bits per weight for 3 tasks: 1 + 2/32 (+ nothing else)


def test_affine_beats_the_frozen_feature_extractor_on_a_new_domain(mnist_root):
    common = dict(scenario="task", seed=0, data_root=str(mnist_root), quiet=True,
                  bench_options={"domains": "mnist,permuted", "train_per_class": 200, "test_per_class": 100})
    cfg = {"epochs": 2, "pretrain_epochs": 3, "hidden": (100, 100)}
    affine = runner.run("affine-simple", "domain-chain", config=cfg, **common)
    frozen = runner.run("classifier-only", "domain-chain", config=cfg, **common)
    assert affine["accuracy"][0] == frozen["accuracy"][0]  # the same pretrained baseline
    assert affine["accuracy"][-1][1] > frozen["accuracy"][-1][1] + 0.05
    assert affine["storage"]["params_ratio"] > 1.0


@pytest.mark.parametrize("path", MASK_CONFIGS, ids=[p.stem for p in MASK_CONFIGS])
def test_reproduction_configs_parse_and_dry_run(path, tmp_path, capsys):
    out = reproduce.reproduce(str(path), out=tmp_path, dry_run=True)
    assert out["rows"]
    assert "forgetless run" in capsys.readouterr().out


def test_per_task_and_storage_metrics():
    result = {"accuracy": [[0.9], [0.8, 0.7]], "storage": {"params_ratio": 1.25, "note": "x"}}
    assert reproduce._metric_value(result, "T1") == 0.8
    assert reproduce._metric_value(result, "T2") == 0.7
    assert reproduce._metric_value(result, "T3") is None
    assert reproduce._metric_value(result, "storage.params_ratio") == 1.25
    assert reproduce._metric_value(result, "storage.note") is None
    assert reproduce.is_percent("T2") and not reproduce.is_percent("storage.params_ratio")
    readings = {"report": {"selection": [{"task": 1, "A_last": 1.0}, {"task": 2, "A_last": 0.75}]}}
    assert reproduce._metric_value(readings, "selection.A_last") == 0.75  # the last task's probe reading
    assert reproduce._metric_value(readings, "selection.A_ema") is None and reproduce.is_percent("selection.A_last")
    with pytest.raises(ConfigError, match="T<t>"):
        reproduce._metric_value(result, "X1")
