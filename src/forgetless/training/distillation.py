"""Losses that make a model reproduce another model's outputs (LwF, DGR, iCaRL).

Labels are global output indices. The student is scored over ``student_labels`` and the teacher over
``teacher_labels`` (a subset: in class-IL the teacher knows only the classes before the current task);
the teacher's probability of a label it does not know is zero, as in van de Ven & Tolias' ``loss_fn_kd``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _host_labels(labels) -> tuple[int, ...]:
    return tuple(int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels))


@functools.lru_cache(maxsize=256)
def _on_device(labels: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # label sets are fixed per task: one host-to-device copy per set and device, not one per step
    return torch.tensor(labels, dtype=torch.long, device=device)


def _as_labels(labels, device) -> torch.Tensor:
    return _on_device(_host_labels(labels), torch.device(device))


def _host_positions(labels, within) -> tuple[int, ...]:
    """:func:`positions` for label lists known on the host (checked there, so no device read)."""
    within, labels = _host_labels(within), _host_labels(labels)
    index = {label: i for i, label in enumerate(within)}
    if any(label not in index for label in labels):
        raise ValueError("teacher labels must be a subset of the student labels")
    return tuple(index[label] for label in labels)


def positions(labels: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """Index of each of ``labels`` inside the label list ``within`` (every label must occur in it)."""
    table = torch.full((int(max(int(within.max()), int(labels.max()))) + 1,), -1, dtype=torch.long,
                       device=within.device)
    table[within] = torch.arange(len(within), device=within.device)
    index = table[labels]
    if bool((index < 0).any()):
        raise ValueError("teacher labels must be a subset of the student labels")
    return index


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, student_labels, teacher_labels,
                     temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015), as LwF uses it: T^2 * mean_n sum_c -p_c log q_c, with p the
    teacher's softmax at temperature T over its labels and q the student's over its own."""
    s_labels = _as_labels(student_labels, student.device)
    t_labels = _as_labels(teacher_labels, student.device)
    log_q = F.log_softmax(student[:, s_labels] / temperature, dim=1)
    p = F.softmax(teacher.detach()[:, t_labels] / temperature, dim=1)
    where = _on_device(_host_positions(teacher_labels, student_labels), student.device)
    return -(p * log_q[:, where]).sum(1).mean() * temperature**2


def masked_soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, student_mask: torch.Tensor,
                            teacher_mask: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """:func:`soft_target_loss` with the label sets as boolean masks over outputs, one row per sample when
    samples differ (replayed samples of several tasks, each on its own task's head)."""
    target = torch.softmax(teacher.detach().masked_fill(~teacher_mask, float("-inf")) / temperature, dim=1)
    log_student = torch.log_softmax(student.masked_fill(~student_mask, float("-inf")) / temperature, dim=1)
    return -(target * log_student.masked_fill(~student_mask, 0.0)).sum(1).mean() * temperature**2


def hard_target_loss(student: torch.Tensor, teacher: torch.Tensor, student_labels, teacher_labels) -> torch.Tensor:
    """Cross-entropy of the student, over its labels, against the teacher's most likely label."""
    s_labels = _as_labels(student_labels, student.device)
    t_labels = _as_labels(teacher_labels, student.device)
    where = _on_device(_host_positions(teacher_labels, student_labels), student.device)  # teacher's -> student's
    return F.cross_entropy(student[:, s_labels], where[teacher.detach()[:, t_labels].argmax(1)])


def binary_soft_targets(teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """iCaRL's distillation targets: the teacher's per-class sigmoid outputs (at temperature T)."""
    return torch.sigmoid(teacher.detach() / temperature)
