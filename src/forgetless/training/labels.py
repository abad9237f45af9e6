"""Output-label masks: which logits a loss or an argmax may use (a task's labels, every label seen so far)."""

from __future__ import annotations

import torch


def label_mask(labels, n_outputs: int, device=None) -> torch.Tensor:
    """Boolean vector over outputs, True at ``labels``."""
    keep = torch.zeros(n_outputs, dtype=torch.bool, device=device)
    keep[torch.as_tensor(list(labels), dtype=torch.long, device=device)] = True
    return keep


def masked_logits(logits: torch.Tensor, keep: torch.Tensor | list[int]) -> torch.Tensor:
    """Logits with outputs outside ``keep`` set to -inf (cross-entropy and argmax then ignore them).

    ``keep`` is a list of labels, a boolean vector over outputs, or a boolean matrix (one row per sample).
    """
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool:
        keep = label_mask(keep, logits.shape[1], logits.device)
    return logits.masked_fill(~keep, float("-inf"))
