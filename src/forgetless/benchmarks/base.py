"""Task streams: :class:`Split`, :class:`Task`, :class:`Benchmark`, scenarios and the registry.

Labels follow the scenario (van de Ven & Tolias, 2019):

- ``task`` and ``class``: every class of the stream gets its own target label, numbered in the order
  the classes arrive (task 0 holds labels 0..k-1, task 1 the next k, ...). In task-IL the runner
  restricts the argmax to the task's labels (equivalent to one head per task); in class-IL to every
  label seen so far.
- ``domain``: every task reuses the labels 0..k-1 (the position of the class within its task).

So a single-head method is evaluated in all three scenarios without knowing which one it is in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .. import config as cfg
from ..errors import ConfigError, choices
from .transforms import Compose, Transform

Scenario = Literal["task", "domain", "class"]
SCENARIOS: tuple[str, ...] = ("task", "domain", "class")


@dataclass
class Split:
    """Inputs (uint8 images, or float features) and targets of one part of a task, kept in memory.

    ``transform`` turns a raw batch into model input (normalisation, per-task permutation,
    augmentation when ``train=True``); batches are index slices of the tensors.
    """

    x: torch.Tensor
    y: torch.Tensor
    transform: Transform = field(default_factory=Compose)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return dataclasses.replace(self, x=self.x.to(device), y=self.y.to(device))

    @property
    def device(self) -> torch.device:
        return self.x.device

    def inputs(self, index: torch.Tensor | slice | None = None, train: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.x if index is None else self.x[index]
        return self.transform(x, train, generator)

    def batch(self, index: torch.Tensor, train: bool = False, generator: torch.Generator | None = None):
        return self.inputs(index, train, generator), self.y[index]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                train: bool = False, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the split in batches (shuffled with ``generator`` if asked; sharded by rank)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order[rank::world_size].to(self.device)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size], train, generator)

    def subset(self, index: torch.Tensor) -> Split:
        return dataclasses.replace(self, x=self.x[index], y=self.y[index])



def union(splits: list[Split]) -> Split:
    """One split holding every sample of ``splits``.

    Splits that share a transform (the tasks of a split benchmark) are simply concatenated; otherwise
    (permuted MNIST, domain chains) each sample keeps its own task's transform.
    """
    if not splits:
        raise ValueError("union of no splits")
    if all(s.transform is splits[0].transform for s in splits):
        return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]), splits[0].transform)
    return UnionSplit(splits)


class UnionSplit(Split):
    """Concatenated splits with different transforms: a batch is transformed part by part, reassembled."""

    def __init__(self, splits: list[Split]) -> None:
        self.parts = list(splits)
        super().__init__(torch.cat([p.x for p in self.parts]), torch.cat([p.y for p in self.parts]))
        sizes = torch.tensor([len(p) for p in self.parts])
        self.owner = torch.repeat_interleave(torch.arange(len(self.parts)), sizes).to(self.x.device)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]).to(self.x.device)

    def to(self, device) -> UnionSplit:
        return UnionSplit([p.to(device) for p in self.parts])

    def subset(self, index: torch.Tensor) -> Split:
        owners = self.owner[index]
        return union([p.subset(index[owners == t] - self.offsets[t]) for t, p in enumerate(self.parts)
                      if bool((owners == t).any())])

    def inputs(self, index=None, train=False, generator=None):
        if index is None:
            index = torch.arange(len(self), device=self.x.device)
        elif isinstance(index, slice):
            index = torch.arange(len(self), device=self.x.device)[index]
        owners = self.owner[index]
        out = None
        for t, part in enumerate(self.parts):
            sel = torch.nonzero(owners == t).flatten()
            if len(sel) == 0:
                continue
            xt = part.inputs(index[sel] - self.offsets[t], train, generator)
            if out is None:
                out = xt.new_empty((len(index), *xt.shape[1:]))
            out[sel] = xt
        return out


@dataclass
class Task:
    """One task of a stream.

    ``classes`` are the original dataset class ids (for reporting); ``labels`` are the target ids the
    model predicts for this task under the benchmark's scenario (see the module docstring).
    """

    id: int
    classes: list[int]
    labels: list[int]
    train: Split
    val: Split
    test: Split
    name: str = ""

    def to(self, device: torch.device | str) -> Task:
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a method may know about a benchmark before seeing data (passed to ``methods.create``)."""

    name: str
    scenario: str
    n_tasks: int
    input_shape: tuple[int, ...]
    n_outputs: int
    task_labels: tuple[tuple[int, ...], ...]
    task_classes: tuple[tuple[int, ...], ...] = ()
    default_backbone: str = "mlp"
    kind: Literal["classification", "regression"] = "classification"
    dataset: str = ""

    def active_labels(self, task_index: int) -> list[int]:
        """Output units in play after task ``task_index``: the task's own labels in task-IL (multi-head
        equivalent), every label seen so far in class-IL, all of them in domain-IL. Single-head methods
        train against these and the runner takes the argmax over them."""
        if self.scenario == "task":
            return list(self.task_labels[task_index])
        labels: set[int] = set()
        for t in range(task_index + 1):
            labels.update(self.task_labels[t])
        return sorted(labels)

    def task_label_masks(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``[tasks, outputs]``: row t marks task t's labels (every output in regression, where each
        task uses all of them)."""
        if self.kind == "regression":
            return torch.ones(self.n_tasks, self.n_outputs, dtype=torch.bool, device=device)
        masks = torch.zeros(self.n_tasks, self.n_outputs, dtype=torch.bool, device=device)
        for t, labels in enumerate(self.task_labels):
            masks[t, list(labels)] = True
        return masks

    def label_task(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[outputs]``: the task each label belongs to (its last task when labels are shared, as in
        domain-IL)."""
        owner = torch.zeros(self.n_outputs, dtype=torch.long, device=device)
        for t, labels in enumerate(self.task_labels):
            owner[list(labels)] = t
        return owner


@dataclass
class Benchmark:
    name: str
    scenario: str
    tasks: list[Task]
    input_shape: tuple[int, ...]
    n_outputs: int
    options: dict[str, Any] = field(default_factory=dict)
    default_backbone: str = "mlp"
    kind: Literal["classification", "regression"] = "classification"
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def info(self) -> BenchmarkInfo:
        return BenchmarkInfo(
            name=self.name, scenario=self.scenario, n_tasks=len(self.tasks), input_shape=tuple(self.input_shape),
            n_outputs=self.n_outputs, task_labels=tuple(tuple(t.labels) for t in self.tasks),
            task_classes=tuple(tuple(t.classes) for t in self.tasks), default_backbone=self.default_backbone,
            kind=self.kind, dataset=self.dataset,
        )


def assign_labels(task_classes: list[list[int]], scenario: str) -> tuple[list[list[int]], list[dict[int, int]], int]:
    """Target labels per task for a scenario: (labels per task, class->label maps, number of outputs)."""
    check_scenario(scenario)
    labels, maps = [], []
    if scenario == "domain":
        sizes = {len(c) for c in task_classes}
        if len(sizes) != 1:
            raise ConfigError(f"the domain scenario needs the same number of classes in every task, "
                              f"got {sorted(sizes)}")
        for classes in task_classes:
            labels.append(list(range(len(classes))))
            maps.append({c: i for i, c in enumerate(classes)})
        return labels, maps, sizes.pop()
    offset = 0
    for classes in task_classes:
        labels.append(list(range(offset, offset + len(classes))))
        maps.append({c: offset + i for i, c in enumerate(classes)})
        offset += len(classes)
    return labels, maps, offset


def check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; valid: {choices(SCENARIOS)}")


def relabel(y: torch.Tensor, mapping: dict[int, int]) -> torch.Tensor:
    """Map original class ids to target labels with a lookup table (vectorised)."""
    table = torch.full((int(max(mapping)) + 1,), -1, dtype=torch.long)
    for c, label in mapping.items():
        table[c] = label
    return table[y]


def stratified_split(y: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) with ``fraction`` of every class held out (at least one sample per class
    when fraction > 0 and the class has two or more samples)."""
    if fraction <= 0:
        return torch.arange(len(y)), torch.empty(0, dtype=torch.long)
    if not 0 < fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction}")
    keep, held = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values


# ----------------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    factory: Callable[..., Benchmark]
    options: type
    description: str
    scenarios: tuple[str, ...] = SCENARIOS


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register(name: str, options: type, description: str, scenarios: tuple[str, ...] = SCENARIOS):
    """Decorator: ``factory(scenario, seed, opts, data_root) -> Benchmark`` becomes benchmark ``name``."""

    def wrap(factory: Callable[..., Benchmark]) -> Callable[..., Benchmark]:
        if name in BENCHMARKS:
            raise RuntimeError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = BenchmarkSpec(name, factory, options, description, scenarios)
        return factory

    return wrap


def build(name: str, scenario: str = "class", seed: int = 0, data_root: str | None = None,
          **options: Any) -> Benchmark:
    """Build benchmark ``name`` in ``scenario``; ``options`` (strings or typed values) override its defaults."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {choices(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    check_scenario(scenario)
    if scenario not in spec.scenarios:
        raise ConfigError(f"benchmark {name!r} does not support scenario {scenario!r}; "
                          f"valid: {choices(spec.scenarios)}")
    opts = cfg.build(spec.options, options, what="--bench key", owner=name)
    for key in ("train_per_class", "test_per_class"):  # shared by the option classes; 0 crashes, < 0 drops one
        value = getattr(opts, key, None)
        if value is not None and value < 1:
            raise ConfigError(f"--bench {key}={value} is out of range; valid: an integer >= 1 (or none: all)")
    bench = spec.factory(scenario=scenario, seed=seed, opts=opts, data_root=data_root)
    bench.options = cfg.to_dict(opts)
    return bench
