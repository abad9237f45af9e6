"""The 1-D nonlinear regression toy problem of the hypernetwork paper (von Oswald et al., 2020, Fig. 2).

Three tasks, polynomials of increasing degree on disjoint input intervals (Appendix C, Eqs. 7-9; the
functions, intervals and noise level are those of the authors' released code):

    task 1: y = x + 3          on [-4, -2]
    task 2: y = 2 x^2 - 1      on [-1,  1]
    task 3: y = (x - 3)^3      on [ 2,  4]

Training inputs are drawn uniformly from the interval and the targets carry Gaussian noise (std 0.05);
test inputs are evenly spaced over the interval with noise-free targets, so the reported MSE measures the
fit to the function itself. Only the task-incremental scenario exists (one output, the task is given).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import option
from .base import Benchmark, Split, Task, register
from .transforms import Compose


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x + 3.0


def _quadratic(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * x.pow(2) - 1.0


def _cubic(x: torch.Tensor) -> torch.Tensor:
    return (x - 3.0).pow(3)


TASKS = [
    ("x+3", _linear, (-4.0, -2.0)),
    ("2x^2-1", _quadratic, (-1.0, 1.0)),
    ("(x-3)^3", _cubic, (2.0, 4.0)),
]


@dataclass
class ToyRegressionOptions:
    n_train: int = option(100, ge=1, source="the authors' code")  # per task
    n_test: int = option(50, ge=1)
    noise_std: float = option(0.05, ge=0)
    n_tasks: int = option(3, ge=1, le=len(TASKS))


def task_function(index: int):
    """(name, f, (low, high)) of task ``index``."""
    return TASKS[index]


@register("toy-regression", ToyRegressionOptions, "1-D regression of 3 polynomials (hypernetwork paper, Fig. 2)",
          scenarios=("task",))
def _toy(scenario: str, seed: int, opts: ToyRegressionOptions, data_root: str | None) -> Benchmark:
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(opts.n_tasks):
        name, f, (low, high) = TASKS[t]
        x = torch.rand(opts.n_train, 1, generator=g) * (high - low) + low
        y = f(x) + torch.randn(opts.n_train, 1, generator=g) * opts.noise_std
        xt = torch.linspace(low, high, opts.n_test).unsqueeze(1)
        empty = Split(torch.empty(0, 1), torch.empty(0, 1), Compose())
        tasks.append(Task(t, [], [0], Split(x, y, Compose()), empty, Split(xt, f(xt), Compose()), name=name))
    return Benchmark("toy-regression", scenario, tasks, (1,), 1, default_backbone="mlp", kind="regression",
                     dataset="toy-regression")
