"""Logging backends fed from the same records as ``log.jsonl`` (:meth:`forgetless.training.Context.log`):
``csv`` (built in), ``tensorboard`` (the ``tensorboard`` package, ``pip install 'forgetless[tensorboard]'``)
and ``wandb`` (``pip install wandb``; offline unless ``WANDB_MODE`` says otherwise). Scalars go in as they are
logged; the runner's ``evaluation`` record after each task carries the accuracy row, so every backend holds
the accuracy matrix as it grows. And a plain heartbeat line for runs whose stderr is not a terminal.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, choices

LOGGERS = ("csv", "tensorboard", "wandb")


class Logger:
    """A backend: ``record`` gets every log record (``task``, ``time`` and the logged values), ``close`` ends."""

    def record(self, record: Mapping[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k not in ("task", "time", "step", "epoch", "event")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


class CSVLogger(Logger):
    """``log.csv``: one row per logged scalar (task, step, epoch, key, value; long format, so any key fits) and
    ``accuracy_matrix.csv``: row i = accuracy on every task after learning task i, rewritten after each task."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        path = self.out_dir / "log.csv"
        new = not path.exists()
        self._fh: TextIO = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._fh)
        if new:
            self._writer.writerow(["time", "task", "step", "epoch", "key", "value"])
        self._matrix: dict[int, list[float]] = _read_matrix(self.out_dir / "accuracy_matrix.csv")

    def record(self, record: Mapping[str, Any]) -> None:
        for key, value in _scalars(record).items():
            self._writer.writerow([record.get("time"), record.get("task"), record.get("step", ""),
                                   record.get("epoch", ""), key, value])
        row = record.get("accuracy") if record.get("event") == "evaluation" else None
        if isinstance(row, Sequence):
            self._matrix[int(record["task"])] = [float(v) for v in row]
            from .fileio import write_text

            width = max(len(r) for r in self._matrix.values())
            lines = ["after_task," + ",".join(f"task_{j + 1}" for j in range(width))]
            lines += [f"{i + 1}," + ",".join(str(v) for v in r) for i, r in sorted(self._matrix.items())]
            write_text(self.out_dir / "accuracy_matrix.csv", "\n".join(lines) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _read_matrix(path: Path) -> dict[int, list[float]]:
    """The rows already written (a resumed run appends to them)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    return {int(r[0]) - 1: [float(v) for v in r[1:] if v != ""] for r in rows if r}


class TensorBoardLogger(Logger):
    """Scalars under their key with the global step ``task * 1e6 + step`` (monotone across tasks), the accuracy
    matrix as ``accuracy/task_j`` over tasks learned, and its mean as ``accuracy/average``."""

    def __init__(self, out_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'forgetless[tensorboard]'"
                              ) from None
        self._writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def record(self, record: Mapping[str, Any]) -> None:
        task = int(record.get("task", 0))
        if record.get("event") == "evaluation" and isinstance(record.get("accuracy"), Sequence):
            row = [float(v) for v in record["accuracy"]]
            for j, v in enumerate(row):
                self._writer.add_scalar(f"accuracy/task_{j + 1}", v, task + 1)
            self._writer.add_scalar("accuracy/average", sum(row[: task + 1]) / (task + 1), task + 1)
        else:
            step = task * 1_000_000 + int(record.get("step") or 0)
            for key, value in _scalars(record).items():
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger(Logger):
    """Weights & Biases, offline by default (``WANDB_MODE`` overrides): scalars and the accuracy rows."""

    def __init__(self, out_dir: Path, config: Mapping[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--log wandb needs the wandb package: pip install wandb") from None
        os.environ.setdefault("WANDB_MODE", "offline")
        self._run = wandb.init(dir=str(out_dir), config=dict(config or {}), reinit=True)

    def record(self, record: Mapping[str, Any]) -> None:
        values: dict[str, Any] = _scalars(record)
        if record.get("event") == "evaluation" and isinstance(record.get("accuracy"), Sequence):
            values.update({f"accuracy/task_{j + 1}": float(v) for j, v in enumerate(record["accuracy"])})
        if values:
            self._run.log({**values, "task": record.get("task")})

    def close(self) -> None:
        self._run.finish()


def parse(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"csv,tensorboard"`` -> ("csv", "tensorboard"); unknown names are a one-line error."""
    if not names:
        return ()
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    for n in items:
        if n not in LOGGERS:
            raise ConfigError(f"unknown logger {n!r} in --log; valid: {choices(LOGGERS)}")
    return tuple(dict.fromkeys(items))


def create(names: Sequence[str], out_dir: Path | None, config: Mapping[str, Any] | None = None) -> list[Logger]:
    if names and out_dir is None:
        raise ConfigError("--log needs an output directory (--out)")
    made: list[Logger] = []
    for n in names:
        made.append(CSVLogger(out_dir) if n == "csv" else TensorBoardLogger(out_dir) if n == "tensorboard"
                    else WandbLogger(out_dir, config))
    return made


class Heartbeat:
    """A plain progress line every ``seconds`` (and at each task's end) for a run whose stderr is not a terminal
    (nohup, SLURM): task k/N, step/total, the last logged loss, elapsed time and ETA for the task."""

    def __init__(self, seconds: float = 30.0, stream: TextIO | None = None, label: str = "") -> None:
        self.seconds = seconds
        self.stream = stream or sys.stderr
        self.label = label
        self._last = 0.0
        self._start = 0.0
        self.loss: float | None = None

    def start(self) -> None:
        self._start = self._last = time.monotonic()

    def step(self, task: int, n_tasks: int, desc: str, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.seconds and step != total:
            return
        self._last = now
        elapsed = now - self._start
        eta = elapsed / step * (total - step) if step else math.nan
        loss = f" loss {self.loss:.4f}" if self.loss is not None else ""
        print(f"{self.label}task {task + 1}/{n_tasks} {desc} step {step}/{total}{loss} "
              f"elapsed {elapsed:.0f}s eta {eta:.0f}s", file=self.stream, flush=True)
