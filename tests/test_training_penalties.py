"""Penalties and distillation of forgetless.training: Fisher / MAS importance equal to their per-sample
definitions, the quadratic penalty and SI's path integral by hand, EWC's terms, soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import methods
from forgetless.training.distillation import hard_target_loss, soft_target_loss
from forgetless.training.penalties import (
    Anchor,
    AnchorSum,
    PathIntegral,
    fisher_diagonal,
    output_sensitivity,
    quadratic_penalty,
    trainable,
)

from conftest import synthetic_benchmark


def _per_sample_loop(model, split, loss_of_output, power):
    """Reference: one autograd call per sample (only acceptable in a test)."""
    params = trainable(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for i in range(len(split)):
        x, y = split.batch(torch.tensor([i]))
        out = model(x)
        grads = torch.autograd.grad(loss_of_output(out, y), list(params.values()))
        for (n, _), g in zip(params.items(), grads, strict=True):
            total[n] += g.abs().pow(power)
    return {n: v / len(split) for n, v in total.items()}


class _WithLayerNorm(nn.Module):
    """A backbone with a non-Linear parameter: forces the vmap path of the importance estimators."""

    def __init__(self, shape):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.LayerNorm(16), nn.ReLU())
        self.out_features = 16

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("backbone", [None, _WithLayerNorm], ids=["linear-path", "vmap-path"])
def test_fisher_and_mas_equal_per_sample_definitions(backbone):
    bench = synthetic_benchmark("class", n_tasks=2, per_class=6)
    model = methods.create("ewc", bench.info(), backbone=backbone, hidden=(16,))
    split = bench.tasks[1].train
    labels = [0, 1, 2, 3]

    def nll_of_prediction(out, _):
        logp = F.log_softmax(out[:, labels], dim=1)
        return -logp[0, logp[0].argmax()]

    def nll_of_truth(out, y):
        return -F.log_softmax(out[:, labels], dim=1)[0, labels.index(int(y))]

    def squared_norm(out, _):
        return out[0, labels].pow(2).sum()

    for ours, reference in [
        (fisher_diagonal(model, split, labels), _per_sample_loop(model, split, nll_of_prediction, 2)),
        (fisher_diagonal(model, split, labels, empirical=True), _per_sample_loop(model, split, nll_of_truth, 2)),
        (output_sensitivity(model, split, labels), _per_sample_loop(model, split, squared_norm, 1)),
    ]:
        assert set(ours) == set(reference)
        for name in ours:
            torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-7)


def test_quadratic_penalty_hand_computed():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    anchors = [Anchor({"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([1.0, 3.0])}),
               Anchor({"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([2.0, 0.5])})]
    # 1*1 + 3*4 = 13 and 2*0 + 0.5*1 = 0.5
    assert float(quadratic_penalty({"w": w}, anchors).detach()) == pytest.approx(13.5)


def test_anchor_sum_equals_the_loop_over_anchors_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (7, 5), "b": (5,)}
    theta = {n: nn.Parameter(torch.randn(s, generator=g)) for n, s in shapes.items()}
    anchors, summed = [], AnchorSum()
    for t in range(6):
        star = {n: torch.randn(s, generator=g) * 0.5 for n, s in shapes.items()}
        fisher = {n: torch.rand(s, generator=g).pow(3) * 10.0 ** (t - 3) for n, s in shapes.items()}
        fisher["w"][0] = 0.0  # a parameter no task cares about: A = 0, whatever mu is
        anchors.append(Anchor(star, fisher))
        summed.add(star, fisher)
        values = []
        for penalty in (quadratic_penalty(theta, anchors), summed.penalty(theta)):
            grads = torch.autograd.grad(penalty, list(theta.values()))
            values.append((penalty.detach(), grads))
        (old, old_grads), (new, new_grads) = values
        torch.testing.assert_close(new, old, rtol=1e-5, atol=0)
        for a, b in zip(new_grads, old_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert summed.count == 6 and summed.nbytes() == anchors[0].nbytes()  # one anchor's worth whatever the count


def test_anchor_sum_of_one_anchor_is_that_anchor_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    theta = {"w": nn.Parameter(torch.randn(50, generator=g))}
    anchor = Anchor({"w": torch.randn(50, generator=g)}, {"w": torch.rand(50, generator=g)})
    summed = AnchorSum()
    summed.add(anchor.params, anchor.importance)
    assert torch.equal(summed.penalty(theta), quadratic_penalty(theta, [anchor]))


def test_ewc_state_stays_flat_with_the_number_of_tasks_and_old_checkpoints_load():
    import pickle

    info = synthetic_benchmark("task", n_tasks=3).info()
    ewc = methods.create("ewc", info, ewc_lambda=10.0)
    sizes = []
    for t in range(5):
        ewc.consolidate({n: torch.full_like(p, float(t + 1)) for n, p in trainable(ewc).items()})
        with torch.no_grad():
            for p in ewc.parameters():
                p.add_(0.1)
        sizes.append(ewc.storage()["penalty_bytes"])
    assert sizes[1:] == [sizes[0]] * 4 and sizes[0] == 2 * ewc.storage()["model_bytes"]
    # a method pickled before the sum (one Anchor per task in .anchors) folds them in when loaded
    old = methods.create("ewc", info, ewc_lambda=10.0)
    anchors = [Anchor({n: p.detach() + k for n, p in trainable(old).items()},
                      {n: torch.full_like(p, k + 1.0) for n, p in trainable(old).items()}) for k in range(3)]
    state = old.__getstate__()
    del state["penalty_terms"]
    state["anchors"] = anchors
    old.__setstate__(state)
    reference = 0.5 * 10.0 * quadratic_penalty(trainable(old), anchors)
    torch.testing.assert_close(old.extra_loss(None, None, None, None), reference)
    assert pickle.loads(pickle.dumps(old)).penalty_terms.count == 3


def test_path_integral_accumulates_minus_gradient_times_step():
    w = nn.Parameter(torch.tensor([0.0, 0.0]))
    path = PathIntegral({"w": w})
    steps = [(torch.tensor([1.0, -2.0]), torch.tensor([-0.5, 0.5])),
             (torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.0]))]
    expected_w = torch.zeros(2)
    for g, delta in steps:
        w.grad = g.clone()
        with torch.no_grad():
            w += delta
        path.step({"w": w})
        expected_w -= g * delta
    torch.testing.assert_close(path.w["w"], expected_w)
    omega = path.consolidate({"w": w}, xi=0.1)
    change = torch.tensor([-1.5, 0.5])
    torch.testing.assert_close(omega["w"], expected_w / (change**2 + 0.1))
    assert float(path.w["w"].abs().sum()) == 0.0  # restarts for the next task
    torch.testing.assert_close(path.start["w"], w.detach())


def test_ewc_keeps_a_term_per_task_and_online_ewc_a_decayed_running_fisher():
    info = synthetic_benchmark("task", n_tasks=3).info()
    ewc = methods.create("ewc", info, ewc_lambda=10.0)
    online = methods.create("online-ewc", info, ewc_lambda=10.0, gamma=0.5)
    f1 = {n: torch.full_like(p, 1.0) for n, p in trainable(online).items()}
    f2 = {n: torch.full_like(p, 4.0) for n, p in trainable(online).items()}
    for model in (ewc, online):
        model.consolidate(f1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model.consolidate(f2)
    assert ewc.penalty_terms.count == 2 and online.penalty_terms.count == 1
    for name, p in trainable(online).items():
        running = online.penalty_terms.anchor
        torch.testing.assert_close(running.importance[name], f2[name] + 0.5 * f1[name])  # F2 + gamma F1
        torch.testing.assert_close(running.params[name], p.detach())  # latest parameters
    assert online.penalty_terms.constant == 0.0
    # EWC: F1 (theta - theta1)^2 + F2 (theta - theta1 - 1)^2 = 5 (theta - theta1 - 0.8)^2 + 0.8 per parameter
    for name, p in trainable(ewc).items():
        torch.testing.assert_close(ewc.penalty_terms.anchor.importance[name], f1[name] + f2[name])
        torch.testing.assert_close(ewc.penalty_terms.anchor.params[name], p.detach() - 0.2)
    n_params = sum(p.numel() for p in trainable(ewc).values())
    assert ewc.penalty_terms.constant == pytest.approx(0.8 * n_params, rel=1e-6)
    # penalty = lambda/2 * gamma * sum F~ (theta - theta*)^2 with every parameter moved by 1 from the anchor
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    n_params = sum(p.numel() for p in trainable(online).values())
    penalty = online.extra_loss(None, None, None, None).detach()
    assert float(penalty) == pytest.approx(0.5 * 10.0 * 0.5 * (4.0 + 0.5) * n_params, rel=1e-5)


def test_soft_target_loss_hand_computed_with_teacher_zero_on_new_labels():
    student = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[3.0, 1.0, -7.0]])
    t = 2.0
    p = torch.softmax(torch.tensor([3.0, 1.0]) / t, 0)  # the teacher knows labels 0, 1 only
    log_q = torch.log_softmax(student[0] / t, 0)
    expected = -(p[0] * log_q[0] + p[1] * log_q[1]) * t**2
    assert float(soft_target_loss(student, teacher, [0, 1, 2], [0, 1], t)) == pytest.approx(float(expected))
    # hard targets: the teacher's argmax among its labels (label 0), scored over the student's labels
    expected_hard = -torch.log_softmax(student[0], 0)[0]
    assert float(hard_target_loss(student, teacher, [0, 1, 2], [0, 1])) == pytest.approx(float(expected_hard))
