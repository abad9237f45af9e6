"""Metrics equal hand-computed values on small matrices."""

from __future__ import annotations

import pytest
import torch

from forgetless import metrics

# acc[i][j]: accuracy on task j after learning task i
ACC = [[0.9], [0.5, 0.8], [0.3, 0.6, 0.7]]


def test_average_accuracies():
    assert metrics.final_accuracy(ACC) == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert metrics.average_accuracy(ACC, after=1) == pytest.approx(0.65)
    assert metrics.average_incremental_accuracy(ACC) == pytest.approx((0.9 + 0.65 + 1.6 / 3) / 3)


def test_forgetting_uses_the_best_earlier_accuracy():
    # task 0: best before the end max(0.9, 0.5) = 0.9, final 0.3 -> 0.6; task 1: 0.8 - 0.6 = 0.2
    assert metrics.forgetting(ACC) == pytest.approx((0.6 + 0.2) / 2)
    recovering = [[0.5], [0.9, 0.8], [0.7, 0.8, 0.9]]  # task 0 improved after task 1, then dropped
    assert metrics.forgetting(recovering) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.8)) / 2)
    assert metrics.forgetting([[0.9]]) is None


def test_backward_transfer():
    assert metrics.bwt(ACC) == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)
    assert metrics.bwt([[1.0]]) is None


def test_forward_transfer_needs_the_full_matrix():
    full = [[0.9, 0.2, 0.1], [0.5, 0.8, 0.3], [0.3, 0.6, 0.7]]
    reference = [0.1, 0.1, 0.1]
    assert metrics.fwt(full, reference) == pytest.approx(((0.2 - 0.1) + (0.3 - 0.1)) / 2)
    with pytest.raises(ValueError, match="full accuracy matrix"):
        metrics.fwt(ACC, reference)


def test_summary_and_bad_matrix():
    s = metrics.summary(ACC)
    assert set(s) == {"final_accuracy", "average_incremental_accuracy", "forgetting", "bwt"}
    with pytest.raises(ValueError, match="row 1"):
        metrics.final_accuracy([[0.5], [0.5]])


def test_decathlon_score_by_hand():
    # E_max = 2 x baseline; a task at the baseline error scores 1000 * (1 - 1/2)^2 = 250,
    # a perfect task 1000, a task at or above E_max 0.
    base = {"a": 0.1, "b": 0.2, "c": 0.3}
    assert metrics.decathlon_score({"a": 0.1}, base) == pytest.approx(250.0)
    assert metrics.decathlon_score({"a": 0.0, "b": 0.4, "c": 0.9}, base) == pytest.approx(1000.0)
    assert metrics.decathlon_score({"b": 0.3}, base) == pytest.approx(1000 * (0.4 ** -2) * 0.1 ** 2)
    with pytest.raises(KeyError):
        metrics.decathlon_score({"z": 0.1}, base)


def test_mac_counting_matches_layer_sizes():
    net = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    assert metrics.count_macs(lambda: net(torch.zeros(1, 10))) == 10 * 5 + 5 * 3
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    assert metrics.count_macs(lambda: conv(torch.zeros(1, 2, 6, 6))) == 6 * 6 * 4 * 2 * 9


def test_storage_bytes():
    lin = torch.nn.Linear(10, 5)
    assert metrics.module_bytes(lin) == (50 + 5) * 4
