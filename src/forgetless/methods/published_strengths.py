"""Regularisation strengths of the baselines per benchmark and scenario, as published, with their sources.

The papers forgetless reproduces take their baseline numbers from van de Ven & Tolias (2019, "Three
scenarios for continual learning", code GMvandeVen/continual-learning) and, for MAS, from Hsu et al.
(2018, "Re-evaluating continual learning scenarios", code GT-RIPL/Continual-Learning-Benchmark).
Sources (see docs/baselines.md for the discussion):

- ``ewc_lambda`` and ``si_c``: GMvandeVen/continual-learning, params/param_values.py (the values the
  issue lists: split MNIST EWC 1e5 / 1e10 / 1e9, SI 10 / 5e4 / 5e3; permuted MNIST EWC 100, SI 10/10/5).
- ``online_lambda`` and ``gamma``: GMvandeVen/continual-learning, branch ``preprints`` (the code of the
  "Three scenarios" preprint), param_values.py: ``o_lambda`` and ``gamma``.
- ``mas_lambda``: GT-RIPL/Continual-Learning-Benchmark, scripts/split_MNIST_incremental_{task,domain,class}.sh
  (``--reg_coef`` of the MAS runs: 1 / 1e4 / 1).

Benchmarks without their own row use the split-MNIST row (the protocol all five papers' MLP baselines follow).
"""

from __future__ import annotations

from ..benchmarks.base import BenchmarkInfo

# parameter -> benchmark -> (task-IL, domain-IL, class-IL)
TABLE: dict[str, dict[str, tuple[float, float, float]]] = {
    "ewc_lambda": {"split-mnist": (1e5, 1e10, 1e9), "permuted-mnist": (1e2, 1e2, 1e2)},
    "si_c": {"split-mnist": (10.0, 5e4, 5e3), "permuted-mnist": (10.0, 10.0, 5.0)},
    "online_lambda": {"split-mnist": (1e8, 1e8, 1e9), "permuted-mnist": (500.0, 1000.0, 5.0)},
    "gamma": {"split-mnist": (0.8, 0.7, 0.8), "permuted-mnist": (0.8, 0.9, 1.0)},
    "mas_lambda": {"split-mnist": (1.0, 1e4, 1.0)},
}
FALLBACK = "split-mnist"
_SCENARIO_INDEX = {"task": 0, "domain": 1, "class": 2}


def published(parameter: str, info: BenchmarkInfo) -> float:
    """The published value of ``parameter`` for the benchmark and scenario of ``info``."""
    rows = TABLE[parameter]
    row = rows.get(info.name, rows[FALLBACK])
    return row[_SCENARIO_INDEX.get(info.scenario, 2)]
