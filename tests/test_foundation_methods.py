"""finetune and joint through the Method protocol, user backbones, and the MNIST acceptance checks."""

from __future__ import annotations

import pytest
import torch

from forgetless import methods, runner
from forgetless.errors import ConfigError

from conftest import synthetic_benchmark


def test_joint_keeps_old_classes_that_finetune_forgets():
    bench = synthetic_benchmark("class", n_tasks=3, per_class=50)
    cfg = {"epochs": 8, "batch_size": 16, "hidden": [32]}
    ft = runner.run("finetune", bench, config=cfg, quiet=True)
    joint = runner.run("joint", bench, config=cfg, quiet=True)
    assert ft["accuracy"][-1][0] < 0.2  # class-IL fine-tuning predicts only the newest classes
    assert joint["final_accuracy"] > 0.9
    assert joint["storage"]["stored_data_bytes"] > 0


def test_joint_in_task_il_trains_each_sample_against_its_own_task():
    bench = synthetic_benchmark("task", n_tasks=3, per_class=50)
    result = runner.run("joint", bench, config={"epochs": 5, "batch_size": 16, "hidden": [32]}, quiet=True)
    assert result["final_accuracy"] > 0.95


def test_user_backbone_factory_and_checkpointing(tmp_path):
    bench = synthetic_benchmark("class", n_tasks=2, per_class=30)
    factory = lambda shape: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 24), torch.nn.ReLU())  # noqa: E731
    method = methods.create("finetune", bench.info(), backbone=factory, epochs=1)
    assert method.head.in_features == 24
    result = runner.run(method, bench, out=tmp_path / "o", quiet=True)  # the lambda is not pickled
    assert result["complete"] and (tmp_path / "o" / "checkpoints" / "task-2.pt").is_file()
    named = methods.create("finetune", bench.info(), backbone="mlp", hidden="10,5")
    assert named.head.in_features == 5


def test_create_rejects_unknown_keys_and_values():
    info = synthetic_benchmark("class", n_tasks=2, per_class=5).info()
    with pytest.raises(ConfigError, match="unknown --set key 'learning_rate' for joint; valid: backbone"):
        methods.create("joint", info, learning_rate=0.1)
    with pytest.raises(ConfigError, match="batch_size=0 is out of range for joint; valid: an integer >= 1"):
        methods.create("joint", info, batch_size=0)
    with pytest.raises(ConfigError, match="iterations=0 is out of range for joint; valid: an integer >= 1"):
        methods.create("joint", info, iterations="0")


@pytest.mark.mnist
def test_split_mnist_acceptance_shape(mnist_root):
    """Class-IL fine-tuning forgets catastrophically, task-IL does not, joint is the upper bound (reduced budget)."""
    common = dict(data_root=str(mnist_root), quiet=True, seed=0)
    budget = {"iterations": 150, "batch_size": 128}
    ft_class = runner.run("finetune", "split-mnist", scenario="class", config=budget, **common)
    ft_task = runner.run("finetune", "split-mnist", scenario="task", config=budget, **common)
    joint = runner.run("joint", "split-mnist", scenario="class", config={"iterations": 400, "batch_size": 128},
                       **common)
    assert 0.15 < ft_class["final_accuracy"] < 0.25 and ft_class["forgetting"] > 0.9
    assert ft_task["final_accuracy"] > 0.85
    assert joint["final_accuracy"] > 0.95


def test_a_config_that_only_changes_a_default_keeps_the_declared_range():
    """HATConfig redeclares lr (0.05) and momentum (0.0) without option(): TrainConfig's ranges still apply."""
    info = synthetic_benchmark("task", n_tasks=2, per_class=5).info()
    with pytest.raises(ConfigError, match=r"^lr=-1.0 is out of range for hat; valid: a finite number > 0$"):
        methods.create("hat", info, lr=-1)
    with pytest.raises(ConfigError, match=r"^momentum=1.5 is out of range for hat; valid: a finite number in \[0, 1\)"):
        methods.create("hat", info, momentum=1.5)
