"""HAT-style sigmoid masks ``m_t = sigmoid(s * e_t)`` (Serra et al., 2018) and what protects them.

The pieces, usable for unit masks (HAT, DGMa) and weight masks (DGMw) alike:

- :class:`SigmoidMask`: per-task real embeddings ``e_t`` of any shape; ``mask(task, s)``.
- :func:`anneal`: the scale ``s`` going linearly from ``1/s_max`` to ``s_max`` -- within an epoch (HAT,
  ``endpoint=False``: progress = batch/batches) or DGM's Eqs. 3-4 (``endpoint=True``: (b-1)/(B-1)), the
  latter applied twice for DGM's global (over epochs) and local (within an epoch) annealing.
- :func:`compensate_embedding_grad_`: HAT's gradient compensation ``s_max/s * (cosh(s e) + 1)/(cosh(e) + 1)``
  (cosh argument clamped at 50) and :func:`clamp_embedding_` (embeddings kept in [-6, 6]).
- :func:`cumulative_max`: the cumulated mask ``m^{<=t} = max(m^t, m^{<t})``.
- :func:`unit_weight_mask` (a weight's mask from the masks of the units it connects: ``min(post, pre)``,
  HAT's ``get_view_for``) and :func:`block_gradients_` (gradients multiplied by ``1 - cumulated mask``;
  for weight-level masks the factor is ``1 - cumulated weight mask`` directly).
- :func:`nested_anneal`: DGM's global (over epochs) + local (within an epoch) schedule of Eqs. 3-4, and
  :func:`reuse_weight`: the regularizer weight ``lambda_RU * S_t / S_free`` of DGM Sec. 3.3.
- :func:`sparsity_regularizer`: ``sum m (1 - m^{<t}) / sum (1 - m^{<t})`` over all masked layers (HAT Eq. 5;
  DGM Eq. 6): only units that are still free are penalised, so reusing old units is free.
- :class:`UnitMasked` / :func:`wrap_units` / :func:`unit_gradient_factors`: HAT on any network of Linear/Conv2d
  layers (each one's output units multiplied by the task's mask; the input-side mask of a layer from the layers
  that feed it, the elementwise max of several where they are summed).

Defaults are those of the HAT code (``joansj/hat``, ``src/approaches/hat.py``): s_max 400, lambda 0.75,
embedding clamp 6, cosh clamp 50, embeddings N(0, 1) (``torch.nn.Embedding``'s initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn

from ...errors import ConfigError
from ..surgery import replace_layers
from ..taskwise import TaskConditioned

HAT_SMAX = 400.0
HAT_LAMBDA = 0.75
HAT_CLAMP = 6.0
HAT_COSH_CLAMP = 50.0


def anneal(s_max: float, index: int, count: int, endpoint: bool = False) -> float:
    """``1/s_max + (s_max - 1/s_max) * progress``, progress = index/count (HAT: ``index`` the batch, ``count``
    the batches per epoch) or, with ``endpoint``, index/(count-1) (DGM: s reaches s_max on the last batch).
    ``index`` is 0-based. With ``count`` 1 and ``endpoint`` the result is ``s_max``."""
    if s_max <= 0:
        raise ConfigError(f"s_max must be > 0, got {s_max}")
    if not endpoint:
        return 1.0 / s_max + (s_max - 1.0 / s_max) * index / max(count, 1)
    progress = 1.0 if count <= 1 else index / (count - 1)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * progress


def nested_anneal(s_max: float, step: int, total: int, per_cycle: int, local: bool = True) -> tuple[float, float]:
    """DGM's scale schedule (Eqs. 3-4) for optimiser step ``step`` (0-based) of ``total``, in cycles (epochs) of
    ``per_cycle`` steps: returns ``(s, s_max_i)``. Global annealing: cycle i of I has
    ``s_max_i = anneal(s_max, i, I, endpoint=True)``; local annealing (``local``, DGMw) moves s within the
    cycle from ``1/s_max_i`` to ``s_max_i`` (``anneal(s_max_i, b, B, endpoint=True)``); without it (DGMa)
    ``s = s_max_i`` for the whole cycle. A last, shorter cycle is annealed over its own length, so the last
    step of a task always has ``s = s_max``."""
    if total < 1 or per_cycle < 1 or not 0 <= step < total:
        raise ValueError(f"step {step} of {total} with cycles of {per_cycle} steps is not valid")
    cycles = math.ceil(total / per_cycle)
    i, b = divmod(step, per_cycle)
    s_max_i = anneal(s_max, i, cycles, endpoint=True)
    if not local:
        return s_max_i, s_max_i
    in_cycle = per_cycle if i < cycles - 1 else total - (cycles - 1) * per_cycle
    return anneal(s_max_i, b, in_cycle, endpoint=True), s_max_i


def reuse_weight(lam: float, size: float, free: float) -> float:
    """DGM's weight of the sparsity regularizer, ``lambda_RU * S_t / S_free`` (Sec. 3.3): grows with the
    network's size relative to its free capacity, so a mature network reuses more and reserves less."""
    if free <= 0:
        raise ValueError(f"free capacity must be > 0, got {free}")
    return lam * size / free


class SigmoidMask(nn.Module):
    """Real-valued embeddings ``e`` of shape ``(n_tasks, *shape)``; task t's mask is ``sigmoid(s * e[t])``.

    ``init``: ``normal`` (N(0, 1), HAT), ``zeros`` (masks start at 0.5, DGM) or a float constant.
    """

    def __init__(self, n_tasks: int, shape: Sequence[int] | int, init: Literal["normal", "zeros"] | float = "normal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if init == "normal":
            data = torch.randn((n_tasks, *shape), generator=generator)
        elif init == "zeros":
            data = torch.zeros((n_tasks, *shape))
        elif isinstance(init, (int, float)):
            data = torch.full((n_tasks, *shape), float(init))
        else:
            raise ConfigError(f"mask embedding init {init!r} is not valid; valid: normal, zeros or a number")
        self.embedding = nn.Parameter(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.embedding.shape[1:])

    def forward(self, task: int, s: float) -> torch.Tensor:
        return torch.sigmoid(s * self.embedding[task])

    @torch.no_grad()
    def mask(self, task: int, s: float) -> torch.Tensor:
        """Task ``task``'s mask, detached (e.g. at ``s_max`` after training, to cumulate)."""
        return torch.sigmoid(s * self.embedding[task]).clone()

    def compensate_(self, s: float, s_max: float, cosh_clamp: float = HAT_COSH_CLAMP) -> None:
        compensate_embedding_grad_(self.embedding, s, s_max, cosh_clamp)

    def clamp_(self, bound: float = HAT_CLAMP) -> None:
        clamp_embedding_(self.embedding, bound)

    @torch.no_grad()
    def grow(self, extra: int, dim: int = 0, value: float = 0.0, frozen_tasks: int = 0,
             frozen_value: float = -HAT_CLAMP) -> None:
        """Add ``extra`` entries along mask dimension ``dim`` (network growth): tasks ``< frozen_tasks`` get
        ``frozen_value`` (mask ~0 at s_max: the new units are not theirs), the others ``value``.
        Recreate the optimiser afterwards (the parameter is replaced)."""
        e = self.embedding.data
        pad_shape = list(e.shape)
        pad_shape[dim + 1] = extra
        pad = e.new_full(pad_shape, float(value))
        pad[:frozen_tasks] = frozen_value
        self.embedding = nn.Parameter(torch.cat([e, pad], dim=dim + 1))


@torch.no_grad()
def compensate_embedding_grad_(embedding: torch.Tensor, s: float, s_max: float,
                               cosh_clamp: float = HAT_COSH_CLAMP) -> None:
    """Multiply ``embedding.grad`` by ``s_max/s * (cosh(clamp(s e)) + 1) / (cosh(e) + 1)`` (HAT, Sec. 2.5):
    the gradient the embedding would get with s = s_max everywhere, so annealing does not starve it."""
    if embedding.grad is None:
        return
    num = torch.cosh(torch.clamp(s * embedding, -cosh_clamp, cosh_clamp)) + 1
    den = torch.cosh(embedding) + 1
    embedding.grad.mul_(s_max / s * num / den)


@torch.no_grad()
def clamp_embedding_(embedding: torch.Tensor, bound: float = HAT_CLAMP) -> None:
    embedding.clamp_(-bound, bound)


def cumulative_max(previous: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    """The cumulated mask ``max(new, previous)`` (``new`` when there is no previous one), detached."""
    new = new.detach()
    return new.clone() if previous is None else torch.maximum(previous, new)


def unit_weight_mask(post: torch.Tensor | None, pre: torch.Tensor | None, weight_shape: Sequence[int]) -> torch.Tensor:
    """The mask of a weight tensor (out, in, ...) from its output-unit mask ``post`` (len out) and input-unit
    mask ``pre``: ``min(post, pre)`` broadcast to ``weight_shape``. ``pre`` may be per input channel of a
    flattened feature map (len in / spatial size: repeated over positions, as in HAT's AlexNet); a missing
    mask counts as ones."""
    out_f, in_f = int(weight_shape[0]), int(weight_shape[1])
    extra = len(weight_shape) - 2
    result = torch.ones(tuple(int(d) for d in weight_shape))
    if post is not None:
        result = result.to(post.device)
        if post.numel() != out_f:
            raise ValueError(f"post mask has {post.numel()} entries, the weight {out_f} outputs")
        result = torch.minimum(result, post.reshape(out_f, 1, *([1] * extra)))
    if pre is not None:
        pre = pre.reshape(-1)
        result = result.to(pre.device)
        if in_f % pre.numel():
            raise ValueError(f"pre mask has {pre.numel()} entries, which does not divide {in_f} inputs")
        pre = pre.repeat_interleave(in_f // pre.numel())
        result = torch.minimum(result, pre.reshape(1, in_f, *([1] * extra)))
    return result


@torch.no_grad()
def block_gradients_(factors: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """``param.grad *= factor`` for each (param, factor): with factor = 1 - cumulated mask, updates to what
    earlier tasks use are blocked (HAT Eq. 3; DGM Eq. 5)."""
    for param, factor in factors:
        if param.grad is not None:
            param.grad.mul_(factor)


def sparsity_regularizer(masks: Sequence[torch.Tensor], previous: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``sum_l sum_i m_li (1 - p_li) / sum_l sum_i (1 - p_li)`` with ``p`` the cumulated masks of earlier tasks
    (all zeros, i.e. the mean mask value, for the first task). Differentiable in ``masks``."""
    if not masks:
        raise ValueError("sparsity_regularizer needs at least one mask")
    if previous is None:
        total = sum(m.sum() for m in masks)
        return total / sum(m.numel() for m in masks)
    if len(previous) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(previous)} cumulated masks")
    num = sum((m * (1 - p)).sum() for m, p in zip(masks, previous, strict=True))
    den = sum((1 - p).sum() for p in previous)
    return num / den.clamp_min(1e-12)


# ------------------------------------------------------------------------------------- HAT unit masking

class UnitMasked(TaskConditioned, nn.Module):
    """A Linear or Conv2d whose output units (features or channels) are multiplied by ``sigmoid(s e_task)``.

    Masking the pre-activation equals HAT's masking after the ReLU (and after max-pooling): both commute
    with a non-negative per-unit scale. ``task`` and ``s`` are attributes (:func:`select_task`, :func:`set_scale`).
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, n_tasks: int, init: Literal["normal", "zeros"] | float = "normal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"UnitMasked wraps Linear or Conv2d, got {type(layer).__name__}")
        self.layer = layer
        self.n_units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        self.mask = SigmoidMask(n_tasks, self.n_units, init, generator)
        self.task = 0
        self.s = 1.0

    def unit_mask(self, task: int | None = None, s: float | None = None) -> torch.Tensor:
        return self.mask(self.task if task is None else task, self.s if s is None else s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        m = self.unit_mask()
        return out * m.view(1, -1, *([1] * (out.dim() - 2)))


def wrap_units(module: nn.Module, n_tasks: int, init: Literal["normal", "zeros"] | float = "normal",
               generator: torch.Generator | None = None) -> list[UnitMasked]:
    """Replace every Linear/Conv2d of ``module`` by a :class:`UnitMasked` (in place); returns them in
    registration order, which is the forward order of a sequential network."""
    replace_layers(module, lambda child: UnitMasked(child, n_tasks, init, generator),
                   keep=lambda parent, child: isinstance(parent, UnitMasked))
    return [m for m in module.modules() if isinstance(m, UnitMasked)]


def set_scale(module: nn.Module, s: float) -> None:
    """Set the sigmoid scale ``s`` of every :class:`UnitMasked` in ``module``."""
    for m in module.modules():
        if isinstance(m, UnitMasked):
            m.s = s


def unit_gradient_factors(layers: Sequence[UnitMasked], cumulated: Sequence[torch.Tensor],
                          sources: Sequence[Sequence[int | None]] | None = None) -> list[tuple[nn.Parameter,
                                                                                               torch.Tensor]]:
    """(parameter, 1 - mask) pairs for unit-masked layers: a weight's mask is ``min(post, pre)`` of the
    cumulated masks of its output units and of its input units, a bias's that of its output units (HAT,
    ``mask_back``).

    ``sources[i]`` says which layers layer i's input is computed from (:func:`forgetless.nn.surgery.layer_sources`;
    default: a chain, layer i - 1, the first layer reading the unmasked input). The input units' mask is the
    cumulated mask of the one source or, where the input is a sum of several masked outputs (a skip connection),
    the elementwise max of theirs: an input channel is protected as soon as one of its terms is used by an
    earlier task. An input that also depends on something unmasked (the network's input, a parameter of the
    network outside the masked layers) counts as fully used (no pre mask): blocking more is safe, less is not."""
    if len(layers) != len(cumulated):
        raise ValueError(f"{len(layers)} layers but {len(cumulated)} cumulated masks")
    if sources is None:
        sources = [[i - 1] if i > 0 else [None] for i in range(len(layers))]
    pairs = []
    for unit, post, src in zip(layers, cumulated, sources, strict=True):
        pre: torch.Tensor | None = None
        if src and None not in src:
            pre = cumulated[src[0]]
            for j in src[1:]:
                pre = torch.maximum(pre, cumulated[j])
        w = unit.layer.weight
        pairs.append((w, 1 - unit_weight_mask(post, pre, w.shape).to(w.device)))
        if unit.layer.bias is not None:
            pairs.append((unit.layer.bias, 1 - post.reshape(-1).to(w.device)))
    return pairs
