"""Batch norm over the global batch when a run trains data-parallel (gloo or nccl; torch's ``SyncBatchNorm``
is CUDA-only and needs its modules swapped in, while methods here create batch norms as tasks arrive).

:func:`install` replaces ``torch.nn.functional.batch_norm`` in this process, so every batch-norm layer,
whenever it was built, normalises a training batch with the mean and variance of the whole global batch:
per channel, the ranks' sums and sample counts are summed, then the sums of squared deviations from that
mean (two passes, as numerically safe as one process). Running statistics are updated with the global
values, so they agree on every rank. Evaluation (``training=False``) is torch's own function.

Gradients: the sums go through :class:`_RankSum`, whose backward sums over ranks each rank's gradient
weighted by its sample count and divides by its own. The loops then all-reduce parameter gradients weighted
by each rank's share of the batch (:func:`forgetless.distributed.all_reduce_gradients`), which together give
the gradient of the global batch's loss, uneven shards included. A forward of the same data on every rank
(an importance estimate on the full task) gets its single-process gradient too: the duplicated counts cancel.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

_plain_batch_norm = F.batch_norm


class _RankSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(count)
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (count,) = ctx.saved_tensors
        weighted = grad * count
        dist.all_reduce(weighted)
        return weighted / count, None


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.batch_norm`` with training statistics over every rank's batch."""
    if not training or not (dist.is_initialized() and dist.get_world_size() > 1):
        return _plain_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    dims = [0, *range(2, input.dim())]
    shape = (1, -1) + (1,) * (input.dim() - 2)
    count = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype, device=input.device)
    sums = _RankSum.apply(torch.cat([input.sum(dims), count]), count)
    total = sums[-1].detach()
    mean = sums[:-1] / total
    centred = input - mean.view(shape)
    var = _RankSum.apply(centred.pow(2).sum(dims), count) / total
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * (total / (total - 1).clamp_min(1)), alpha=momentum)
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def install() -> None:
    """Route every batch-norm layer of this process through :func:`batch_norm` (idempotent)."""
    F.batch_norm = batch_norm
