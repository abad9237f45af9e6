"""The training layer's shared pieces: optimiser factory, log points, the fit loop's schedule and hooks,
best-on-validation selection, task inference and the benchmark's label masks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from forgetless.benchmarks.base import Split
from forgetless.training import Batch, Context, fit, make_optimizer, step_decay
from forgetless.training.distillation import masked_soft_target_loss, soft_target_loss
from forgetless.training.selection import BestOnValidation, mean_loss
from forgetless.training.task_inference import (
    chosen_outputs,
    grouped_forward,
    lowest_entropy,
    most_likely_task,
    output_entropy,
)

from conftest import synthetic_benchmark


def test_make_optimizer_skips_frozen_parameters_and_returns_none_when_nothing_trains():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2), requires_grad=False)
    opt = make_optimizer([a, b], "sgd", 0.1, momentum=0.5, weight_decay=0.01)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["params"] == [a]
    assert opt.param_groups[0]["momentum"] == 0.5 and opt.param_groups[0]["weight_decay"] == 0.01
    assert make_optimizer([b], "adam", 0.1) is None
    fused = make_optimizer([a], "adam", 0.1, fused=True)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults.get("fused") is True


def test_log_points_are_every_log_every_steps_and_the_last():
    ctx = Context(log_every=4)
    points = [s for s in range(10) if ctx.should_log(Batch(None, None, s, 0, s, 10, 10))]
    assert points == [0, 4, 8, 9]


def test_step_decay_divides_at_each_fraction_passed():
    assert [step_decay(s, 10, (0.5, 0.8), 0.1) for s in (0, 4, 5, 7, 8, 9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_fit_decays_the_learning_rate_runs_hooks_in_order_and_logs_what_it_is_given(tmp_path):
    split = Split(torch.randn(40, 3), torch.zeros(40, dtype=torch.long))
    w = nn.Parameter(torch.zeros(3))
    opt = make_optimizer([w], "sgd", 1.0, momentum=0.0)
    seen_lrs, order = [], []
    log = open(tmp_path / "log.jsonl", "w")  # noqa: SIM115
    ctx = Context(log_every=100, _log_file=log)

    def loss_fn(batch):
        order.append("loss")
        loss = ((batch.x @ w) - 1).pow(2).mean()
        return loss, {"loss": loss, "extra": 7}

    def before(batch):
        order.append("before")
        seen_lrs.append(opt.param_groups[0]["lr"])

    fit(ctx, ctx.batches(split, 10, iterations=10), [opt, None], loss_fn, decay_at=(0.5,), decay_factor=0.1,
        before_step=before, after_step=lambda b: order.append("after"), grad_clip=1.0, phase="p")
    log.close()
    assert seen_lrs == pytest.approx([1.0] * 5 + [0.1] * 5)
    assert order[:3] == ["loss", "before", "after"]
    records = [__import__("json").loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 9] and all(r["extra"] == 7 and r["phase"] == "p" for r in records)


def test_best_on_validation_restores_the_lowest_snapshot_and_nothing_without_values():
    net = nn.Linear(2, 1)
    best = BestOnValidation({"net": net, "absent": None})
    assert not best.restore()
    for value, fill in ((0.5, 1.0), (0.2, 2.0), (0.7, 3.0)):
        with torch.no_grad():
            net.weight.fill_(fill)
        best.update(value)
    assert best.best == 0.2 and best.restore()
    assert torch.equal(net.weight, torch.full((1, 2), 2.0))


def test_mean_loss_is_weighted_by_batch_size():
    split = Split(torch.arange(5.0).unsqueeze(1), torch.zeros(5, dtype=torch.long))
    assert mean_loss(split, lambda x, y: x.mean(), batch_size=2) == pytest.approx(2.0)  # (0.5*2 + 2.5*2 + 4) / 5


def test_task_inference_picks_the_least_uncertain_model_over_its_own_units():
    masks = torch.tensor([[True, True, False, False], [False, False, True, True]])
    outputs = torch.tensor([[[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 0.0, 0.0]],   # task 0: uniform, confident
                            [[0.0, 0.0, 8.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # task 1: confident, uniform
    ent = output_entropy(outputs, masks)
    assert ent[0, 0].item() == pytest.approx(math.log(2)) and ent[1, 1].item() == pytest.approx(math.log(2))
    chosen = lowest_entropy(outputs, masks)
    assert chosen.tolist() == [1, 0]
    assert torch.equal(chosen_outputs(outputs, chosen), torch.stack([outputs[1, 0], outputs[0, 1]]))
    assert most_likely_task(torch.tensor([[0.1, 0.5, 9.0], [2.0, 1.0, 0.0]]), n_tasks=2).tolist() == [1, 0]


def test_grouped_forward_sends_each_sample_through_its_tasks_model_once_per_task():
    calls = []

    def forward(x, t):
        calls.append((t, len(x)))
        return x * (t + 1)

    x = torch.arange(5.0).unsqueeze(1)
    out = grouped_forward(x, torch.tensor([1, 0, 1, 2, 0]), forward)
    assert out.squeeze(1).tolist() == [0.0, 1.0, 4.0, 9.0, 4.0] and sorted(calls) == [(0, 2), (1, 2), (2, 1)]


def test_masked_distillation_equals_the_label_list_form():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    s_mask = torch.tensor([True, True, True, True, False]).expand(6, 5)
    t_mask = torch.tensor([True, True, False, False, False]).expand(6, 5)
    torch.testing.assert_close(masked_soft_target_loss(student, teacher, s_mask, t_mask, 2.0),
                               soft_target_loss(student, teacher, [0, 1, 2, 3], [0, 1], 2.0))


def test_benchmark_label_masks_and_owners():
    info = synthetic_benchmark("task", n_tasks=3, classes_per_task=2, per_class=4).info()
    masks = info.task_label_masks()
    assert masks.shape == (3, info.n_outputs) and masks.sum(1).tolist() == [2, 2, 2]
    owner = info.label_task()
    assert all(masks[owner[label], label] for labels in info.task_labels for label in labels)
