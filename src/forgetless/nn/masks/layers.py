"""Linear and Conv2d layers whose weight is transformed per task by a binary mask.

For task t a masked layer uses ``W~ = k0 W + k1 1 + k2 M_t + k3 W o M_t`` (Mancini et al. 2018, Eq. 2):

- Piggyback (Mallya et al. 2018) is ``k = (0, 0, 0, 1)``: ``W o M``; PackNet's per-task view of a pruned
  network is the same product with a mask derived from weight ownership.
- ``affine-simple`` learns ``k0, k1, k2`` (``k3 = 0``, Eq. 3); ``affine-full`` learns all four.
  ``k0`` stays 1 for a layer followed by batch norm (its output is invariant to the weight's scale).
- ``channel_wise`` gives each output channel its own k's (Table 5, last row).

The mask of a task being trained is the straight-through binarisation of real-valued scores
(:func:`~forgetless.nn.masks.binarize.binarize`); :meth:`MaskedWeight.freeze_task` replaces them by a
stored boolean mask (1 bit per entry) and the k's by constants, so the task's weights never change again.
``task = None`` (or a task without masks) uses the plain weight: the pretrained network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..surgery import replace_layers
from ..taskwise import TaskConditioned
from .binarize import Surrogate, binarize, check_surrogate


@dataclass(frozen=True)
class WeightTransform:
    """Which of ``k0..k3`` are learned and their initial (or fixed) values.

    With ``relative`` the initial ``k1`` and ``k2`` are multiples of the layer's mean |W|, so that with
    ``k1 = -k2`` the transformed weight equals the pretrained one while the mask is all ones and a mask
    entry switched off moves its weight by a typical weight magnitude (our reading; the paper does not
    give the k's initialisation).
    """

    init: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    learn: tuple[bool, bool, bool, bool] = (False, False, False, False)
    relative: bool = False
    channel_wise: bool = False

    def __post_init__(self) -> None:
        if len(self.init) != 4 or len(self.learn) != 4:
            raise ConfigError("a weight transform needs four k values and four learn flags (k0, k1, k2, k3)")

    @property
    def is_product(self) -> bool:
        """True when the transform is the fixed product ``W o M`` (Piggyback, PackNet)."""
        return not any(self.learn) and tuple(self.init) == (0.0, 0.0, 0.0, 1.0)

    def replace(self, **changes) -> WeightTransform:
        return dataclasses.replace(self, **changes)


PIGGYBACK = WeightTransform()
AFFINE_SIMPLE = WeightTransform(init=(1.0, -1.0, 1.0, 0.0), learn=(True, True, True, False), relative=True)
AFFINE_FULL = WeightTransform(init=(1.0, -1.0, 1.0, 0.0), learn=(True, True, True, True), relative=True)


class TaskWeights(nn.Module):
    """One task's state in a masked layer: learned scores or a frozen boolean mask, and the k's."""

    def __init__(self, k_init: torch.Tensor, learn: Sequence[bool], scores: torch.Tensor | None,
                 mask: torch.Tensor | None) -> None:
        super().__init__()
        if (scores is None) == (mask is None):
            raise ValueError("a task's masked weights need either learnable scores or a fixed mask")
        self.scores = nn.Parameter(scores) if scores is not None else None
        self.register_buffer("mask", None if mask is None else mask.to(torch.bool))
        learn_t = torch.tensor(list(learn), dtype=torch.bool).view(4, *([1] * (k_init.dim() - 1)))
        self.register_buffer("k_fixed", k_init.clone())
        self.register_buffer("k_learn", learn_t.expand_as(k_init).clone())
        self.k = nn.Parameter(k_init.clone(), requires_grad=bool(learn_t.any()))
        self._update_constants()

    def _update_constants(self) -> None:
        """Which k's are fixed to one value (a float) and which vary (None): the transform skips the terms
        a fixed 0 or 1 makes trivial, which is most of its cost (each term is a pass over the weight)."""
        consts: list[float | None] = []
        for i in range(4):
            fixed = self.k_fixed[i]
            learned = bool(self.k_learn[i].any())
            uniform = bool((fixed == fixed.reshape(-1)[0]).all())
            consts.append(None if learned or not uniform else float(fixed.reshape(-1)[0]))
        self.constants = tuple(consts)
        self.learns_k = bool(self.k_learn.any())  # read here, once, not at every forward

    @property
    def frozen(self) -> bool:
        return self.scores is None

    def coefficients(self) -> torch.Tensor:
        """The k's, shape (4,) or (4, out_channels)."""
        if not getattr(self, "learns_k", True):  # checkpoints from before the flag: where() gives the same k's
            return self.k_fixed
        return torch.where(self.k_learn, self.k, self.k_fixed)

    def n_learned_k(self) -> int:
        return int(self.k_learn.sum())


class MaskedWeight(TaskConditioned):
    """Mixin for :class:`MaskedLinear` and :class:`MaskedConv2d` (see the module docstring)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _setup_masking(self, threshold: float, surrogate: Surrogate, temperature: float) -> None:
        check_surrogate(surrogate)
        self.threshold = float(threshold)
        self.surrogate = surrogate
        self.temperature = float(temperature)
        self.tasks = nn.ModuleDict()
        self.transforms: dict[int, WeightTransform] = {}
        self.task = None

    # ---------------------------------------------------------------------------------------- tasks
    def has_task(self, task: int | None) -> bool:
        return task is not None and str(task) in self.tasks

    def state(self, task: int) -> TaskWeights:
        if not self.has_task(task):
            raise KeyError(f"no masked weights for task {task} in {type(self).__name__}")
        return self.tasks[str(task)]

    def initial_k(self, transform: WeightTransform) -> torch.Tensor:
        k = torch.tensor(transform.init, dtype=self.weight.dtype, device=self.weight.device)
        if transform.relative:
            scale = self.weight.detach().abs().mean()
            k = k * torch.stack([torch.ones_like(scale), scale, scale, torch.ones_like(scale)])
        if transform.channel_wise:
            k = k.view(4, 1).expand(4, self.weight.shape[0]).clone()
        return k

    def add_task(self, task: int, transform: WeightTransform | None = None, scores: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> TaskWeights:
        """Give ``task`` its own transformed weight: learnable ``scores`` (binarised at ``threshold``) or a
        fixed boolean ``mask``, with the k's of ``transform`` (default: Piggyback's product)."""
        transform = PIGGYBACK if transform is None else transform
        for t in (scores, mask):
            if t is not None and tuple(t.shape) != tuple(self.weight.shape):
                raise ValueError(f"mask shape {tuple(t.shape)} differs from the weight's {tuple(self.weight.shape)}")
        if scores is not None:
            scores = scores.to(self.weight.device, self.weight.dtype)
        if mask is not None:
            mask = mask.to(self.weight.device)
        state = TaskWeights(self.initial_k(transform), transform.learn, scores, mask)
        self.tasks[str(task)] = state
        self.transforms[task] = transform
        return state

    @torch.no_grad()
    def freeze_task(self, task: int) -> None:
        """Store the task's binary mask as booleans and its k's as constants: nothing of it is learnable."""
        state = self.state(task)
        if state.scores is not None:
            state.mask = state.scores > self.threshold
            state.scores = None
        state.k_fixed.copy_(state.coefficients())
        state.k_learn.zero_()
        state.k.requires_grad_(False)
        state._update_constants()

    @torch.no_grad()
    def set_mask(self, task: int, mask: torch.Tensor) -> None:
        """Replace ``task``'s fixed mask (PackNet recomputes it from weight ownership after pruning)."""
        state = self.state(task)
        if state.scores is not None:
            raise ValueError(f"task {task} learns its mask; freeze it before setting a fixed one")
        state.mask = mask.to(device=self.weight.device, dtype=torch.bool)

    # -------------------------------------------------------------------------------------- weights
    def binary_mask(self, task: int) -> torch.Tensor:
        """Task ``task``'s mask as 0/1 floats (straight-through gradient to the scores while learning)."""
        state = self.state(task)
        if state.scores is not None:
            return binarize(state.scores, self.threshold, self.surrogate, self.temperature)
        return state.mask.to(self.weight.dtype)

    def transformed_weight(self, task: int | None = None) -> torch.Tensor:
        task = self.task if task is None else task
        if not self.has_task(task):
            return self.weight
        state = self.state(task)
        m = self.binary_mask(task)
        c0, c1, c2, c3 = state.constants
        if (c0, c1, c2, c3) == (0.0, 0.0, 0.0, 1.0):  # Piggyback / PackNet: W o M
            return self.weight * m
        k = state.coefficients()
        if k.dim() == 2:  # channel-wise: one k per output channel
            k = k.view(4, -1, *([1] * (self.weight.dim() - 1)))
        k0, k1, k2, k3 = k[0], k[1], k[2], k[3]
        # W~ = k0 W + k3 W o M + k1 + k2 M, skipping the terms fixed to 0 (or the factor fixed to 1).
        w = self.weight
        if c3 == 0.0:
            out = w if c0 == 1.0 else w * k0
        elif c0 == 0.0:
            out = w * m * k3
        else:
            out = w * torch.addcmul(k0, m, k3)
        if c1 != 0.0:
            out = out + k1
        if c2 != 0.0:
            out = torch.addcmul(out, m, k2)
        return out

    # ------------------------------------------------------------------------------------ reporting
    @torch.no_grad()
    def ones_fraction(self, task: int) -> float:
        return float(self.binary_mask(task).mean())

    def mask_entries(self) -> int:
        return self.weight.numel()

    def k_values(self, task: int) -> list[float] | list[list[float]]:
        return self.state(task).coefficients().detach().cpu().tolist()


class MaskedLinear(MaskedWeight, nn.Linear):
    """``nn.Linear`` with per-task transformed weights (see :class:`MaskedWeight`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, threshold: float = 0.0,
                 surrogate: Surrogate = "identity", temperature: float = 1.0, device=None, dtype=None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._setup_masking(threshold, surrogate, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.transformed_weight(), self.bias)


class MaskedConv2d(MaskedWeight, nn.Conv2d):
    """``nn.Conv2d`` with per-task transformed weights (see :class:`MaskedWeight`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", threshold: float = 0.0,
                 surrogate: Surrogate = "identity", temperature: float = 1.0, device=None, dtype=None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode, device=device, dtype=dtype)
        self._setup_masking(threshold, surrogate, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.transformed_weight(), self.bias)


def masked_copy(layer: nn.Linear | nn.Conv2d, threshold: float = 0.0, surrogate: Surrogate = "identity",
                temperature: float = 1.0) -> MaskedLinear | MaskedConv2d:
    """A masked layer that shares ``layer``'s weight and bias Parameters (built on the meta device, so no
    random numbers are drawn and nothing is copied)."""
    kw = dict(threshold=threshold, surrogate=surrogate, temperature=temperature, device="meta")
    if isinstance(layer, nn.Linear):
        new = MaskedLinear(layer.in_features, layer.out_features, layer.bias is not None, **kw)
    elif isinstance(layer, nn.Conv2d):
        new = MaskedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, **kw)
    else:
        raise TypeError(f"only Linear and Conv2d layers can be masked, got {type(layer).__name__}")
    new.weight = layer.weight
    new.bias = layer.bias
    new.train(layer.training)
    return new


def mask_layers(module: nn.Module, threshold: float = 0.0, surrogate: Surrogate = "identity",
                temperature: float = 1.0) -> list[MaskedLinear | MaskedConv2d]:
    """Replace every Linear/Conv2d inside ``module`` by a masked layer sharing its parameters (in place);
    returns all masked layers of ``module`` in registration order. Already masked layers are kept."""
    replace_layers(module, lambda child: masked_copy(child, threshold, surrogate, temperature),
                   keep=lambda parent, child: isinstance(child, MaskedWeight))
    return masked_layers(module)


def masked_layers(module: nn.Module) -> list[MaskedLinear | MaskedConv2d]:
    return [m for m in module.modules() if isinstance(m, MaskedWeight)]


def freeze_tasks(module: nn.Module, task: int) -> None:
    """:meth:`MaskedWeight.freeze_task` on every masked layer of ``module`` that has ``task``."""
    for layer in masked_layers(module):
        if layer.has_task(task):
            layer.freeze_task(task)


def mask_summary(module: nn.Module, task: int) -> dict[str, dict[str, object]]:
    """Per masked layer (by name): fraction of ones in ``task``'s mask and its k's."""
    out: dict[str, dict[str, object]] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, MaskedWeight) and layer.has_task(task):
            out[name] = {"ones": round(layer.ones_fraction(task), 6), "k": layer.k_values(task)}
    return out
