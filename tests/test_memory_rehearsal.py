"""Rehearsal building blocks: replay label sets, stored-sample losses, herding, A-GEM projection, the
episodic buffer."""

from __future__ import annotations

import pytest
import torch

from forgetless.memory import EpisodicBuffer
from forgetless.memory import buffer as buffer_module
from forgetless.memory.herding import class_balanced_order, herding, interleave
from forgetless.methods.agem import project
from forgetless.methods.rehearsal import replay_label_sets, stored_sample_loss

from conftest import synthetic_benchmark


def test_replay_label_sets_follow_the_scenario():
    task = synthetic_benchmark("task", n_tasks=3).info()
    assert replay_label_sets(task, 2) == [([0, 1], [0, 1]), ([2, 3], [2, 3])]
    cls = synthetic_benchmark("class", n_tasks=3).info()
    assert replay_label_sets(cls, 2) == [([0, 1, 2, 3, 4, 5], [0, 1, 2, 3])]
    dom = synthetic_benchmark("domain", n_tasks=3).info()
    assert replay_label_sets(dom, 1) == [([0, 1], [0, 1])]


def test_stored_samples_are_scored_over_their_own_task_in_task_il():
    info = synthetic_benchmark("task", n_tasks=3).info()
    logits = torch.tensor([[2.0, 0.0, 9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 0.0, 1.0, 9.0, 9.0]])
    y, tasks = torch.tensor([0, 3]), torch.tensor([0, 1])
    first = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]  # task 0: labels 0, 1
    second = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]  # task 1: labels 2, 3
    expected = (first + second) / 2
    assert float(stored_sample_loss(logits, y, tasks, info, 2)) == pytest.approx(float(expected))


def test_herding_tracks_the_mean_better_than_random():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 8, generator=g)
    order = herding(feats, 20)
    assert len(set(order.tolist())) == 20
    # the first pick is the sample closest to the mean
    assert int(order[0]) == int((feats - feats.mean(0)).norm(dim=1).argmin())
    herd_error = (feats[order[:10]].mean(0) - feats.mean(0)).norm()
    random_errors = [(feats[torch.randperm(300, generator=g)[:10]].mean(0) - feats.mean(0)).norm() for _ in range(20)]
    assert herd_error < min(random_errors)


def test_class_balanced_order_interleaves_classes():
    assert interleave([torch.tensor([5, 6, 7]), torch.tensor([1])]).tolist() == [5, 1, 6, 7]
    y = torch.tensor([0] * 10 + [1] * 6)
    order = class_balanced_order(y, per_class=4, features=torch.randn(16, 3))
    assert len(order) == 8
    for k in range(2, 9, 2):  # every even prefix holds as many samples of each class
        assert int((y[order[:k]] == 0).sum()) == k // 2


def test_agem_projection_removes_the_conflicting_component_only():
    g, r = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    assert project(g, r)
    torch.testing.assert_close(g[0], torch.tensor([0.5, 0.5]))
    assert float((g[0] * r[0]).sum()) == pytest.approx(0.0)
    g2 = [torch.tensor([1.0, 1.0])]
    assert not project(g2, [torch.tensor([1.0, 0.0])])
    torch.testing.assert_close(g2[0], torch.tensor([1.0, 1.0]))


def test_buffer_sampling_cost_does_not_grow_with_contents(monkeypatch):
    bench = synthetic_benchmark("class", n_tasks=3, per_class=20)
    buf = EpisodicBuffer(None)
    calls = []
    real_union = buffer_module.union
    monkeypatch.setattr(buffer_module, "union", lambda splits: calls.append(1) or real_union(splits))
    for i, task in enumerate(bench.tasks):
        buf.add_task(task.train, i)
        for _ in range(5):
            x, _, t = buf.sample(8, torch.Generator().manual_seed(i))
            assert x.shape[0] == 8 and int(t.max()) <= i
    assert len(calls) == 3  # the stored samples are concatenated once per added task, not per draw
    assert len(buf) == sum(len(t.train) for t in bench.tasks)  # capacity None keeps everything
