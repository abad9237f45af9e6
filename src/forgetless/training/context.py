"""What a method gets besides the task (:class:`Context`: device, randomness, logging, progress) and the
mini-batch iterator it trains from (:meth:`Context.batches`, yielding :class:`Batch`)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..benchmarks.base import Split
from ..distributed import set_shard
from ..errors import ConfigError
from .divergence import check_logged


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    step: int  # 0-based optimiser step within the task
    epoch: int  # 0-based
    index: int  # 0-based batch index within the epoch
    per_epoch: int  # batches in one epoch
    total: int  # steps in the whole task
    share: float = 1.0  # this rank's fraction of the global batch (weights its gradient in the all-reduce)

    @property
    def last_in_epoch(self) -> bool:
        return self.index == self.per_epoch - 1


@dataclass
class Context:
    """What a method gets besides the task: device, randomness, logging and progress."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator = field(default_factory=torch.Generator)
    task_index: int = 0
    n_tasks: int = 1
    progress: bool = False
    out_dir: Path | None = None
    log_every: int = 50
    rank: int = 0
    world_size: int = 1
    _log_file: Any = None
    loggers: Sequence[Any] = ()  # forgetless.loggers backends fed with every record
    heartbeat: Any = None  # forgetless.loggers.Heartbeat when stderr is not a terminal
    # diagnostics only (set by the runner): probe(split, per_class) -> the model's accuracy on split "val" or
    # "test" of every task learned so far, this one included (at most per_class samples per class). It reads
    # old tasks' real data, so a method may log what it returns but must never train or select on it.
    probe: Callable[[str, int | None], list[float]] | None = None

    def log(self, **values: Any) -> None:
        """Append one record to log.jsonl (tensors are converted here, so call sites stay cheap) and stop the
        run with :class:`~forgetless.errors.DivergedError` if a logged number is nan or inf: log points are
        where values are read back anyway, so the check costs no extra device synchronisation."""
        record = {"task": self.task_index, "time": round(time.time(), 3)}
        for k, v in values.items():
            record[k] = v.item() if isinstance(v, torch.Tensor) else v
        if self._log_file is not None and self.rank == 0:
            self._log_file.write(json.dumps(record) + "\n")  # the bad value too: it is the evidence
            self._log_file.flush()
            for logger in self.loggers:
                logger.record(record)
        if self.heartbeat is not None and isinstance(record.get("loss"), float):
            self.heartbeat.loss = record["loss"]
        check_logged(record, self.task_index)

    def should_log(self, batch: Batch) -> bool:
        """Whether ``batch`` is a log point: every ``log_every`` steps and the task's last step (the only
        places a loop may read tensors back to the host)."""
        return batch.step % self.log_every == 0 or batch.step == batch.total - 1

    def batches(self, split: Split, batch_size: int, epochs: int = 1, iterations: int | None = None,
                train: bool = True, desc: str = "train", drop_last: bool = False) -> Iterator[Batch]:
        """Shuffled mini-batches for ``iterations`` steps (cycling over epochs) or ``epochs`` passes.

        Batches are index slices of in-memory tensors, transformed (and augmented if ``train``) batch-wise.

        Data-parallel (``world_size`` > 1): ``batch_size`` is the global batch. Every rank draws the same
        permutation, cuts the same global batches and keeps its ``rank::world_size`` share of each, so the
        ranks' shards are disjoint and together are the one-process batch. The global batch is transformed
        on every rank before it is cut: augmentation then draws what one process would, and the generator
        stays in step on every rank (the transform is cheap next to the forward/backward that is split).
        """
        n = len(split)
        if n == 0:
            return
        ws = self.world_size
        if batch_size < ws:
            raise ConfigError(f"batch size {batch_size} is smaller than the world size {ws}: a rank would have "
                              "no data; use a larger batch_size or fewer processes")
        per_epoch = (n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size))
        if ws > 1 and 0 < n - (per_epoch - 1) * batch_size < ws:
            per_epoch -= 1  # a last global batch smaller than the world would leave a rank without data: skipped
            if per_epoch == 0:
                return
        total = iterations if iterations else epochs * per_epoch
        bar = self.bar(total, f"task {self.task_index + 1}/{self.n_tasks} {desc}")
        if self.heartbeat is not None:
            self.heartbeat.start()
        step = 0
        epoch = 0
        while step < total:
            order = torch.randperm(n, generator=self.generator).to(split.device)
            for index in range(per_epoch):
                idx = order[index * batch_size : (index + 1) * batch_size]
                if len(idx) == 0:
                    break
                x, y = split.batch(idx, train, self.generator)
                share = 1.0
                if ws > 1:
                    x, y = x[self.rank :: ws].contiguous(), y[self.rank :: ws].contiguous()
                    share = len(y) / len(idx)
                    set_shard(len(idx), self.rank, ws)  # per-sample noise as one process draws it
                try:
                    yield Batch(x, y, step, epoch, index, per_epoch, total, share)
                finally:
                    set_shard(None)
                step += 1
                if bar is not None:
                    bar.update(1)
                if self.heartbeat is not None:
                    self.heartbeat.step(self.task_index, self.n_tasks, desc, step, total)
                if step >= total:
                    break
            epoch += 1
        if bar is not None:
            bar.close()

    def bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
