"""Logging backends fed from the run's log records: CSV and TensorBoard hold the losses and the accuracy
matrix after every task (read back here); the heartbeat line appears when stderr is not a terminal."""

from __future__ import annotations

import csv
import io

import pytest

from forgetless import loggers, runner
from forgetless.errors import ConfigError

from conftest import synthetic_benchmark

FAST = {"iterations": 6, "batch_size": 16, "hidden": (16,)}


def _run(tmp_path, log, **kw):
    bench = synthetic_benchmark("class", n_tasks=3, per_class=20)
    return runner.run("finetune", bench, config=FAST, out=tmp_path / "run", quiet=True, log=log, log_every=2, **kw)


def test_csv_logger_writes_losses_and_the_accuracy_matrix(tmp_path):
    result = _run(tmp_path, "csv")
    with open(tmp_path / "run" / "accuracy_matrix.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["after_task", "task_1", "task_2", "task_3"]
    assert [[float(v) for v in r[1:]] for r in rows[1:]] == result["accuracy"]
    with open(tmp_path / "run" / "log.csv") as fh:
        log = list(csv.DictReader(fh))
    losses = [r for r in log if r["key"] == "loss"]
    assert {r["task"] for r in losses} == {"0", "1", "2"} and [r["step"] for r in losses[:4]] == ["0", "2", "4", "5"]


def test_tensorboard_logger_writes_scalars_and_accuracy_rows(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'forgetless[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _run(tmp_path, ["tensorboard"])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "total_loss", "accuracy/task_1", "accuracy/task_3", "accuracy/average"} <= tags
    first = [e.value for e in events.Scalars("accuracy/task_1")]
    assert first == pytest.approx([row[0] for row in result["accuracy"]])
    assert len(events.Scalars("loss")) == 3 * 4  # steps 0, 2, 4, 5 of each task


def test_unknown_logger_and_log_without_out_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown logger 'mlflow' in --log; valid: csv, tensorboard, wandb"):
        loggers.parse("csv,mlflow")
    with pytest.raises(ConfigError, match="--log needs an output directory"):
        runner.run("finetune", synthetic_benchmark("class", n_tasks=2, per_class=5), config=FAST, log="csv",
                   quiet=True)


def test_heartbeat_appears_when_stderr_is_not_a_terminal(tmp_path, capsys):
    bench = synthetic_benchmark("class", n_tasks=2, per_class=20)
    runner.run("finetune", bench, config=FAST, out=tmp_path / "run", heartbeat_seconds=1e-9)
    err = capsys.readouterr().err  # pytest's capture is not a TTY, as under nohup or SLURM
    beats = [line for line in err.splitlines() if " step " in line]
    assert beats and beats[-1].startswith("[finetune seed 0] task 2/2 train step 6/6 loss ")
    assert "eta 0s" in beats[-1]


def test_heartbeat_rate_is_limited():
    out = io.StringIO()
    beat = loggers.Heartbeat(seconds=3600, stream=out)
    beat.start()
    for step in range(1, 11):
        beat.step(0, 1, "train", step, 10)
    assert out.getvalue().count("\n") == 1  # only the task's last step within the hour
