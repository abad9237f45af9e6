"""Sparse-connectivity layers and networks for continual learning by sparse sub-networks (SpaceNet,
Sokar et al., 2021; Algorithms 2-4).

A sparse layer holds a grid of *units* between its input and output neurons: one weight for
:class:`SparseLinear`, one whole k x k kernel for :class:`SparseConv2d` (structured sparsity, Sec. 4).
Every unit is empty or owned by exactly one task (``owner``: 0 = empty, t + 1 = task t), so the
per-task connection masks are explicit and disjoint, and a new layer has no connections at all.

Old tasks' values live in the ``frozen`` buffer, out of reach of any optimiser (momentum or weight
decay included); the current task's values are the compact trainable parameter ``values``, scattered
into the grid in the forward pass, so only they receive gradients.
Biases follow the released code: a neuron's bias trains while the neuron is free and is frozen once
the neuron is reserved for a task; an output unit's bias trains only while its class is being learned.

:class:`SparseNetwork` turns a feed-forward dense backbone (MLP, Zenke et al.'s CNN, ...) into an empty
sparse twin plus a sparse output layer, keeps a free-neuron list per layer and implements connection
allocation (Alg. 2), drop/grow rewiring (Alg. 3) and neuron reservation (Alg. 4) as tensor operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .surgery import replace_layers


def top_k(scores: torch.Tensor, k: int, generator: torch.Generator | None = None, largest: bool = True) -> torch.Tensor:
    """Flat indices of the ``k`` largest (or smallest) ``scores``, ties at the boundary broken at random.

    Equal scores (e.g. the zero importance of never-lit border pixels) are then picked uniformly, not
    by their position in the grid. A partial selection (``torch.topk``), never a full sort.
    """
    flat = scores.reshape(-1)
    k = max(0, min(int(k), flat.numel()))
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    kth = torch.topk(flat, k, largest=largest, sorted=False).values
    kth = kth.min() if largest else kth.max()
    sure = torch.nonzero(flat > kth if largest else flat < kth).flatten()
    ties = torch.nonzero(flat == kth).flatten()
    pick = torch.randperm(len(ties), generator=generator)[: k - len(sure)].to(flat.device)
    return torch.cat([sure, ties[pick]])


class SparseLayer(nn.Module):
    """Connection grid ``[out_units, in_units]`` with per-task ownership; subclasses define the forward.

    The current task's values are the compact parameter ``values`` (one row per unit, at the flat grid
    positions ``index``); the forward pass scatters them into a copy of ``frozen``. Gradient masking,
    the optimiser step and the importance of Eq. 3 therefore cost as much as the task's connections,
    not the whole grid.
    """

    def __init__(self, out_units: int, in_units: int, kernel: Sequence[int] = (), bias: bool = True) -> None:
        super().__init__()
        self.out_units, self.in_units, self.kernel = int(out_units), int(in_units), tuple(int(k) for k in kernel)
        shape = (self.out_units, self.in_units, *self.kernel)
        self.values = nn.Parameter(torch.zeros(0, *self.kernel))
        self.register_buffer("index", torch.zeros(0, dtype=torch.long))
        self.register_buffer("frozen", torch.zeros(shape))
        self.register_buffer("owner", torch.zeros(self.out_units, self.in_units, dtype=torch.int16))
        self.register_buffer("importance", torch.zeros(shape))  # Omega of Eq. 3, reset for every task
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_units))
            self.register_buffer("bias_frozen", torch.zeros(self.out_units))
            self.register_buffer("bias_free", torch.ones(self.out_units, dtype=torch.bool))
        else:
            self.register_parameter("bias", None)

    # ------------------------------------------------------------------------------------ forward
    @property
    def unit_size(self) -> int:
        return math.prod(self.kernel)

    @property
    def n_units(self) -> int:
        return self.out_units * self.in_units

    def effective_weight(self, show_frozen: bool = True) -> torch.Tensor:
        """The dense weight: old tasks' values (unless hidden) with the current task's scattered in."""
        base = self.frozen if show_frozen else torch.zeros_like(self.frozen)
        if self.index.numel() == 0:
            return base
        flat = torch.index_put(base.view(self.n_units, -1), (self.index,), self.values.view(len(self.index), -1))
        return flat.view(base.shape)

    def effective_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return torch.where(self.bias_free, self.bias, self.bias_frozen)

    # ------------------------------------------------------------------------------------ masks
    def current_units(self) -> torch.Tensor:
        """Boolean ``[out, in]``: the units of the task being learned."""
        mask = torch.zeros(self.n_units, dtype=torch.bool, device=self.owner.device)
        mask[self.index] = True
        return mask.view(self.out_units, self.in_units)

    def task_units(self, task: int) -> torch.Tensor:
        """Boolean ``[out, in]``: the connection mask of ``task``."""
        return self.owner == task + 1

    def connections(self, task: int | None = None) -> int:
        """Units (weights, or whole kernels) owned by ``task``, or by any task when ``task`` is None."""
        mask = self.owner > 0 if task is None else self.task_units(task)
        return int(mask.sum())

    def unit_importance(self, current_only: bool = True) -> torch.Tensor:
        """Omega summed over each unit (a kernel's importance is the sum over its k x k elements)."""
        imp = self.importance
        if imp.dim() > 2:
            imp = imp.sum(dim=tuple(range(2, imp.dim())))
        return imp * self.current_units() if current_only else imp

    # ------------------------------------------------------------------------------ structure ops
    def _add_units(self, task: int, flat: torch.Tensor, values: torch.Tensor | None) -> None:
        """Units ``flat`` become ``task``'s, trainable, with ``values`` (zero when None)."""
        flat = flat.to(self.index.device)
        self.owner.view(-1)[flat] = task + 1
        if values is None:
            values = torch.zeros(len(flat), *self.kernel)
        self.index = torch.cat([self.index, flat])
        self.values.data = torch.cat([self.values.data, values.to(self.values).view(len(flat), *self.kernel)])

    def _remove_units(self, flat: torch.Tensor) -> None:
        """Current units ``flat`` become empty positions again."""
        self.owner.view(-1)[flat] = 0
        keep = ~torch.isin(self.index, flat)
        self.index = self.index[keep]
        self.values.data = self.values.data[keep]

    def _initial_values(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Glorot-uniform values of the dense layer (the released code's initialisation), drawn per unit."""
        fan_in, fan_out = self.in_units * self.unit_size, self.out_units * self.unit_size
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return (torch.rand(n, self.unit_size, generator=generator) * 2 - 1) * bound

    def allocate(self, task: int, rows: torch.Tensor, cols: torch.Tensor, n: int,
                 generator: torch.Generator | None = None) -> int:
        """Alg. 2, line 5: ``n`` random empty units between output neurons ``rows`` and input features
        ``cols`` (boolean vectors) become ``task``'s, Glorot-initialised. Returns how many were placed."""
        free = (self.owner == 0) & rows[:, None] & cols[None, :]
        n = min(int(n), int(free.sum()))
        if n <= 0:
            return 0
        score = torch.rand(free.shape, generator=generator).to(free.device).masked_fill(~free, -1.0)
        self._add_units(task, torch.topk(score.view(-1), n).indices, self._initial_values(n, generator))
        return n

    def drop(self, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Alg. 3, drop phase: remove ``int(fraction * units)`` of the current task's least important
        units (Omega, Eq. 3). Returns the boolean ``[out, in]`` mask of the removed units."""
        current = self.current_units()
        n = int(fraction * len(self.index))
        dropped = torch.zeros_like(current)
        if n <= 0:
            return dropped
        score = self.unit_importance().masked_fill(~current, float("inf"))
        flat = top_k(score, n, generator, largest=False)
        self._remove_units(flat)
        dropped.view(-1)[flat] = True
        return dropped

    def grow(self, task: int, n: int, a_in: torch.Tensor, a_out: torch.Tensor, rows: torch.Tensor,
             cols: torch.Tensor, exclude: torch.Tensor | None = None, generator: torch.Generator | None = None) -> int:
        """Alg. 3, grow phase: add ``n`` zero-initialised units where ``G = a_out a_in^T`` (Eq. 5) is
        highest among empty positions between ``rows`` and ``cols`` (minus ``exclude``: the units just
        dropped, as in the released code). Returns how many were added."""
        candidates = (self.owner == 0) & rows[:, None] & cols[None, :]
        if exclude is not None:
            candidates &= ~exclude
        n = min(int(n), int(candidates.sum()))
        if n <= 0:
            return 0
        gain = torch.outer(a_out, a_in).masked_fill(~candidates, float("-inf"))
        self._add_units(task, top_k(gain, n, generator), None)
        return n

    def consolidate(self) -> None:
        """End of a task: its values join the frozen ones; nothing is trainable until the next allocation."""
        # unit_size, not -1: a task that found no free connection has an empty index (and nothing to add)
        self.frozen.view(self.n_units, self.unit_size)[self.index] = self.values.detach().view(len(self.index),
                                                                                               self.unit_size)
        self.index = self.index[:0]
        self.values.data = self.values.data[:0]
        self.values.grad = None

    def set_trainable_bias(self, mask: torch.Tensor) -> None:
        """Biases of output neurons in ``mask`` train; the others keep (or are frozen at) their value."""
        if self.bias is None:
            return
        mask = mask.to(self.bias_free.device)
        newly_frozen = self.bias_free & ~mask
        self.bias_frozen[newly_frozen] = self.bias.detach()[newly_frozen]
        newly_free = ~self.bias_free & mask
        self.bias.data[newly_free] = self.bias_frozen[newly_free]
        self.bias_free.copy_(mask)

    # ----------------------------------------------------------------------------------- Omega
    def reset_importance(self) -> None:
        self.importance.zero_()

    def accumulate_importance(self, before: torch.Tensor) -> None:
        """Omega += |dL/dw * (w_after - w_before)| (Eqs. 2-3) for the current units, after an optimiser
        step; ``before`` is a copy of ``values`` taken before the step."""
        grad = self.values.grad
        if grad is None or self.index.numel() == 0:
            return
        term = (grad * (self.values.detach() - before)).abs_()
        self.importance.view(self.n_units, -1).index_add_(0, self.index, term.view(len(self.index), -1))


class SparseLinear(SparseLayer):
    """A fully connected layer whose units are single weights."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(out_features, in_features, (), bias)
        self.in_features, self.out_features = int(in_features), int(out_features)

    def forward(self, x: torch.Tensor, show_frozen: bool = True) -> torch.Tensor:
        return F.linear(x, self.effective_weight(show_frozen), self.effective_bias())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, connections={self.connections()}"


class SparseConv2d(SparseLayer):
    """A 2-d convolution whose units are whole kernels (one per input/output feature-map pair)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1,
                 padding=0, dilation=1, bias: bool = True) -> None:
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(out_channels, in_channels, kernel, bias)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor, show_frozen: bool = True) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(show_frozen), self.effective_bias(), self.stride, self.padding,
                        self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, kernels={self.connections()}")


def sparse_twin(layer: nn.Linear | nn.Conv2d) -> SparseLinear | SparseConv2d:
    """An empty sparse layer of ``layer``'s shape (no connection, zero biases)."""
    if isinstance(layer, nn.Linear):
        return SparseLinear(layer.in_features, layer.out_features, layer.bias is not None)
    if layer.groups != 1 or not isinstance(layer.padding, (int, tuple)):
        raise ConfigError("sparse layers support ungrouped convolutions with numeric padding only")
    return SparseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, layer.bias is not None)


def sparsify(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` and ``nn.Conv2d`` inside ``module`` by an empty sparse twin.

    Normalisation layers would mix tasks through shared statistics, so they are refused.
    """
    for name, child in module.named_modules():
        if isinstance(child, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            raise ConfigError(f"sparse networks cannot hold normalisation layers ({name}: {type(child).__name__}): "
                              f"use a backbone without them (mlp, zenke-cnn, simple-cnn)")
    replace_layers(module, sparse_twin)
    return module


class SparseNetwork(nn.Module):
    """A feed-forward sparse network: a sparsified backbone, then a sparse output layer over every class.

    Neuron layer 0 is the input of the first sparse layer, neuron layer ``l`` the output of sparse layer
    ``l - 1`` (neurons of a linear layer, feature maps of a convolution) and neuron layer ``L`` the
    output classes. The backbone's linear and convolution layers must be registered in data-flow order
    (true of ``mlp``, ``zenke-cnn`` and ``simple-cnn``); a linear layer after convolutions sees each feature
    map as ``in_features / maps`` consecutive inputs (flattening or global pooling).

    Hidden neuron layers keep a free list (``free(l)``); neurons reserved for a task leave it. The network
    starts with no connection at all.
    """

    def __init__(self, backbone: nn.Module, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.body = sparsify(backbone)
        self.head = SparseLinear(n_features, n_outputs)
        layers = self.layers
        self.sizes = [layers[0].in_units] + [layer.out_units for layer in layers]  # neurons per neuron layer
        self.spread: list[int] = []  # input features per neuron, on the input side of each sparse layer
        for l, layer in enumerate(layers):
            if layer.in_units % self.sizes[l]:
                raise ConfigError(f"sparse layer {l} has {layer.in_units} inputs, not a multiple of the "
                                  f"{self.sizes[l]} neurons before it: the backbone is not a feed-forward chain")
            self.spread.append(layer.in_units // self.sizes[l])
        for l, size in enumerate(self.sizes):
            if l < len(layers):
                self.register_buffer(f"free_{l}", torch.ones(size, dtype=torch.bool))
            self.register_buffer(f"selected_{l}", torch.zeros(size, dtype=torch.bool))
        self.task: int | None = None

    @property
    def layers(self) -> list[SparseLayer]:
        return [m for m in self.body.modules() if isinstance(m, SparseLayer)] + [self.head]

    @property
    def n_hidden(self) -> int:
        """Hidden neuron layers (those with sel/spec hyperparameters)."""
        return len(self.sizes) - 2

    def free(self, l: int) -> torch.Tensor:
        return getattr(self, f"free_{l}")

    def selected(self, l: int) -> torch.Tensor:
        return getattr(self, f"selected_{l}")

    def forward(self, x: torch.Tensor, show_old_outputs: bool = True) -> torch.Tensor:
        return self.head(self.body(x).flatten(1), show_frozen=show_old_outputs)

    # ------------------------------------------------------------------------------ importance
    def neuron_importance(self, l: int) -> torch.Tensor:
        """Eq. 4: a neuron's importance is the summed Omega of the current task's connections going into
        it; the network's input neurons have none, so theirs is that of the connections going out (as in
        the released code)."""
        layers = self.layers
        if l == 0:
            imp = layers[0].unit_importance().sum(0)
            return imp.view(self.sizes[0], -1).sum(1)
        return layers[l - 1].unit_importance().sum(1)

    def _input_side(self, l: int, neurons: torch.Tensor) -> torch.Tensor:
        """Per-neuron values of neuron layer ``l`` spread over the input features of sparse layer ``l``."""
        return neurons.repeat_interleave(self.spread[l]) if self.spread[l] > 1 else neurons

    def _input_importance(self, l: int) -> torch.Tensor:
        if l == 0:  # per input feature (a pixel), from its own outgoing connections
            return self.layers[0].unit_importance().sum(0)
        return self._input_side(l, self.neuron_importance(l))

    # ------------------------------------------------------------------------------ Alg. 2
    def allocate_task(self, task: int, labels: Sequence[int], selected: Sequence[int | None],
                      counts: Sequence[int], generator: torch.Generator | None = None) -> list[int]:
        """Connections allocation: pick ``selected[l-1]`` free neurons in every hidden layer (all free ones
        where None), every input neuron and the task's output units, and place ``counts[l]`` random
        connections in each sparse layer between the chosen neurons. Returns the numbers placed."""
        layers = self.layers
        if len(selected) != self.n_hidden or len(counts) != len(layers):
            raise ConfigError(f"need {self.n_hidden} selected-neuron counts and {len(layers)} connection counts, "
                              f"got {len(selected)} and {len(counts)}")
        self.task = task
        device = self.free(0).device
        self.selected(0).copy_(self.free(0))
        for l in range(1, len(self.sizes) - 1):
            free = self.free(l)
            n_free, want = int(free.sum()), selected[l - 1]
            chosen = free.clone()
            if want is not None and want < n_free:
                idx = torch.nonzero(free).flatten()
                keep = idx[torch.randperm(n_free, generator=generator)[:want].to(device)]
                chosen = torch.zeros_like(free)
                chosen[keep] = True
            self.selected(l).copy_(chosen)
        out = torch.zeros(self.sizes[-1], dtype=torch.bool, device=device)
        out[torch.as_tensor(list(labels), dtype=torch.long, device=device)] = True
        self.selected(len(self.sizes) - 1).copy_(out)
        placed = []
        for l, layer in enumerate(layers):
            rows, cols = self.selected(l + 1), self._input_side(l, self.selected(l))
            placed.append(layer.allocate(task, rows, cols, counts[l], generator))
            layer.reset_importance()
            layer.set_trainable_bias(out if layer is self.head else self.free(l + 1))
        return placed

    # ------------------------------------------------------------------------------ Alg. 3
    def rewire(self, fraction: float, generator: torch.Generator | None = None,
               include_output: bool = False) -> list[tuple[int, int, torch.Tensor]]:
        """Drop the fraction of least important connections of the current task in every sparse layer
        and grow as many where the neuron-importance product is highest (zero-initialised). The output
        layer is left alone unless ``include_output`` (the released code rewires hidden layers only).
        Returns ``(dropped, grown, changed_units)`` per rewired layer."""
        if self.task is None:
            raise RuntimeError("rewire() before allocate_task()")
        layers = self.layers if include_output else self.layers[:-1]
        changes = []
        for l, layer in enumerate(layers):
            dropped = layer.drop(fraction, generator)
            n_dropped = int(dropped.sum())
            before = layer.current_units()
            grown = layer.grow(self.task, n_dropped, self._input_importance(l), self.neuron_importance(l + 1),
                               self.selected(l + 1), self._input_side(l, self.selected(l)), dropped, generator)
            changes.append((n_dropped, grown, dropped | (layer.current_units() & ~before)))
        return changes

    # ------------------------------------------------------------------------------ Alg. 4
    def reserve(self, specific: Sequence[int], generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Neurons reservation: in every hidden layer, the ``specific[l-1]`` most important of the task's
        selected neurons (Eq. 4) leave the free list; their biases freeze. Returns the reserved masks."""
        if len(specific) != self.n_hidden:
            raise ConfigError(f"need {self.n_hidden} specific-neuron counts, got {len(specific)}")
        layers = self.layers
        reserved = []
        for l in range(1, len(self.sizes) - 1):
            candidates = self.selected(l) & self.free(l)
            k = min(int(specific[l - 1]), int(candidates.sum()))
            mask = torch.zeros_like(candidates)
            if k > 0:
                score = self.neuron_importance(l).masked_fill(~candidates, float("-inf"))
                mask[top_k(score, k, generator)] = True
            self.free(l).masked_fill_(mask, False)
            layers[l - 1].set_trainable_bias(self.free(l))
            reserved.append(mask)
        return reserved

    def end_task(self) -> None:
        """The task's connections and output biases become frozen."""
        for layer in self.layers:
            layer.consolidate()
        self.head.set_trainable_bias(torch.zeros(self.sizes[-1], dtype=torch.bool))
        self.task = None

    # ------------------------------------------------------------------------------ accounting
    def connections(self, task: int | None = None, weights: bool = True) -> list[int]:
        """Per sparse layer: weights (kernels count k*k) or units owned by ``task`` (None: by any task)."""
        return [layer.connections(task) * (layer.unit_size if weights else 1) for layer in self.layers]

    def dense_connections(self, weights: bool = True) -> list[int]:
        return [layer.out_units * layer.in_units * (layer.unit_size if weights else 1) for layer in self.layers]

    def free_counts(self) -> list[int]:
        """Free neurons in every hidden layer."""
        return [int(self.free(l).sum()) for l in range(1, len(self.sizes) - 1)]

    def input_connections(self, task: int) -> torch.Tensor:
        """Connections of ``task`` leaving each input feature of the first layer (Fig. 6 before reshaping)."""
        return self.layers[0].task_units(task).sum(0)
