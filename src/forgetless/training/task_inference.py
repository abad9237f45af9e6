"""Task inference, one component for the methods that keep a model per task and must pick one when no task
id is given: HNET+ENT (the model with the lowest predictive entropy), HNET+TIR and CCGN (a task classifier).

A method produces either every task model's outputs ``[T, N, C]`` or task logits ``[N, T]``; these functions
choose a task per sample and answer with the chosen model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def output_entropy(outputs: torch.Tensor, masks: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[T, N]``: entropy of each task model's softmax (at ``temperature``) over that task's own output units
    (``masks[t]``: boolean over outputs)."""
    keep = masks[: outputs.shape[0]].unsqueeze(1)
    logp = torch.log_softmax(outputs.masked_fill(~keep, float("-inf")) / temperature, dim=-1)
    return -(logp.exp() * logp.masked_fill(~keep, 0.0)).sum(-1)


def lowest_entropy(outputs: torch.Tensor, masks: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The task whose model is the least uncertain on each sample (von Oswald et al. 2020, HNET+ENT)."""
    return output_entropy(outputs, masks, temperature).argmin(0)


def most_likely_task(task_logits: torch.Tensor, n_tasks: int | None = None) -> torch.Tensor:
    """The task classifier's choice per sample, among the first ``n_tasks`` tasks (all when None)."""
    return (task_logits if n_tasks is None else task_logits[:, :n_tasks]).argmax(1)


def chosen_outputs(outputs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[N, C]``: each sample's row of ``outputs[T, N, C]`` from the model of its chosen task."""
    return outputs[chosen, torch.arange(outputs.shape[1], device=outputs.device)]


def grouped_forward(x: torch.Tensor, chosen: torch.Tensor, forward: Callable[[torch.Tensor, int], torch.Tensor]
                    ) -> torch.Tensor:
    """Each sample through ``forward(x_subset, task)`` of its chosen task: one pass per task present, for
    models too costly to run for every task."""
    out = None
    for t in torch.unique(chosen).tolist():
        idx = torch.nonzero(chosen == t).flatten()
        o = forward(x[idx], t)
        out = o.new_empty(len(x), *o.shape[1:]) if out is None else out
        out[idx] = o
    return out
