"""Metrics derived from the accuracy matrix, plus MAC counting, storage accounting and the decathlon score.

``acc[i][j]`` is the test accuracy on task j after learning task i; rows may be ragged (only j <= i
evaluated) or full (j > i evaluated too, needed for forward transfer). Tasks are 0-indexed here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

Matrix = Sequence[Sequence[float]]


def _check(acc: Matrix) -> None:
    if not acc:
        raise ValueError("empty accuracy matrix")
    for i, row in enumerate(acc):
        if len(row) < i + 1:
            raise ValueError(f"row {i} of the accuracy matrix has {len(row)} entries, needs at least {i + 1}")


def average_accuracy(acc: Matrix, after: int | None = None) -> float:
    """Mean accuracy over tasks 0..t after learning task t (default: the last task). A_t of the DGM paper."""
    _check(acc)
    t = len(acc) - 1 if after is None else after
    return sum(acc[t][: t + 1]) / (t + 1)


def final_accuracy(acc: Matrix) -> float:
    return average_accuracy(acc)


def average_incremental_accuracy(acc: Matrix) -> float:
    """Mean over t of the average accuracy after task t (Rebuffi et al., 2017)."""
    _check(acc)
    return sum(average_accuracy(acc, t) for t in range(len(acc))) / len(acc)


def forgetting(acc: Matrix) -> float | None:
    """Average forgetting (Chaudhry et al., 2018): for each old task j, the best accuracy it had at any
    earlier point minus its final accuracy, averaged over j < T-1. ``None`` with a single task."""
    _check(acc)
    last = len(acc) - 1
    if last == 0:
        return None
    drops = [max(acc[i][j] for i in range(j, last)) - acc[last][j] for j in range(last)]
    return sum(drops) / len(drops)


def bwt(acc: Matrix) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato, 2017): mean of acc[T-1][j] - acc[j][j] over j < T-1."""
    _check(acc)
    last = len(acc) - 1
    if last == 0:
        return None
    return sum(acc[last][j] - acc[j][j] for j in range(last)) / last


def fwt(acc: Matrix, reference: Sequence[float]) -> float | None:
    """Forward transfer (Lopez-Paz & Ranzato, 2017): mean of acc[j-1][j] - b_j over j >= 1, where b_j is
    the accuracy on task j of a reference model (e.g. at random initialisation). Needs a full matrix."""
    _check(acc)
    if len(acc) < 2:
        return None
    if any(len(row) < len(acc) for row in acc):
        raise ValueError("forward transfer needs the full accuracy matrix (evaluate future tasks too)")
    return sum(acc[j - 1][j] - reference[j] for j in range(1, len(acc))) / (len(acc) - 1)


def summary(acc: Matrix) -> dict[str, float | None]:
    return {
        "final_accuracy": final_accuracy(acc),
        "average_incremental_accuracy": average_incremental_accuracy(acc),
        "forgetting": forgetting(acc),
        "bwt": bwt(acc),
    }


# ----------------------------------------------------------------------------------------- decathlon

def decathlon_score(errors: Mapping[str, float], baseline_errors: Mapping[str, float], gamma: float = 2.0) -> float:
    """Visual Decathlon score S (Rebuffi et al., 2017; Eq. 4 of Mancini et al., 2018).

    S = sum_d alpha_d * max(0, E_d^max - E_d)^gamma, with E_d^max = 2 x the baseline error on task d and
    alpha_d = 1000 * (E_d^max)^-gamma, so each task contributes at most 1000 points. Errors are fractions
    in [0, 1] (or percentages, consistently).
    """
    score = 0.0
    for task, err in errors.items():
        if task not in baseline_errors:
            raise KeyError(f"no baseline error for task {task!r}")
        e_max = 2.0 * baseline_errors[task]
        if e_max <= 0:
            raise ValueError(f"baseline error for task {task!r} must be positive")
        score += 1000.0 * e_max ** (-gamma) * max(0.0, e_max - err) ** gamma
    return score


# ----------------------------------------------------------------------------------------------- MACs

def count_macs(fn: Callable[[], object]) -> int:
    """Multiply-accumulate operations of ``fn()`` (FLOPs / 2 as counted by torch's FlopCounterMode:
    matmuls and convolutions, which dominate every network here)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops() // 2)


# -------------------------------------------------------------------------------------------- storage

def tensor_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))
