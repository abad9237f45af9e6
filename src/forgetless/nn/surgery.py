"""How the methods attach to a network they did not build: module replacement, and the data flow between layers.

Every mechanism that changes what a network's layers compute -- weight masks (Piggyback, PackNet, the affine
transformations), HAT's unit masks, CCGN's channel gates, SpaceNet's sparse layers, task-specific batch norm --
goes through :func:`replace_layers`: each matching submodule is replaced, in place, by a module built from it
(a masked copy sharing its parameters, a wrapper, a sparse twin). The network's own ``forward`` is never
rewritten or traced into a new program: it keeps calling ``self.conv1(x)``, which is now the replacement. So a
user's network with skip connections, several inputs per layer or a custom ``forward`` works as it is, as
long as its ``forward`` calls its layers (a ``forward`` that reads ``self.conv1.weight`` itself would bypass the
replacement; see the README's "Your own model").

Methods whose rule needs to know which layer feeds which (HAT's gradient blocking uses the mask of a layer's
input units; SpaceNet allocates connections between consecutive layers) read it from :func:`layer_sources`:
one forward pass on a dummy input, with the autograd graph walked back from each layer's input to the nearest
outputs of the other layers. It follows whatever the ``forward`` does (additions, pooling, flattening,
control flow taken on that input) without symbolic tracing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


def replace_layers(module: nn.Module, build: Callable[[nn.Module], nn.Module],
                   types: tuple[type[nn.Module], ...] = LAYER_TYPES,
                   keep: Callable[[nn.Module, nn.Module], bool] | None = None) -> list[nn.Module]:
    """Replace, in place, every submodule of ``module`` that is an instance of ``types`` by ``build(child)``;
    ``keep(parent, child)`` True leaves a child alone (e.g. one already replaced). Returns the replacements.

    Parents are visited in ``module.modules()`` order (pre-order), and each parent's children in registration
    order: the order in which the replacements are built (and so draw random numbers) is that of every
    method's original loop, so the built-in backbones get bit-identical parameters."""
    built = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, types) and not (keep is not None and keep(parent, child)):
                new = build(child)
                setattr(parent, name, new)
                built.append(new)
    return built


def qualified_names(module: nn.Module) -> dict[int, str]:
    """``id(submodule) -> its qualified name`` (for error messages that name a layer)."""
    return {id(m): name or "(the network)" for name, m in module.named_modules()}


def layer_sources(module: nn.Module, layers: Sequence[nn.Module], example: torch.Tensor,
                  call: Callable[[torch.Tensor], object] | None = None) -> list[list[int | None]]:
    """For each of ``layers`` (submodules of ``module``), which of them its input is computed from: indices
    into ``layers`` of the nearest ones upstream, ``None`` standing for anything else (the network's input, a
    parameter or buffer the network adds itself). Each layer must be called exactly once per forward pass.

    Found by running ``call(example)`` (default ``module(example)``) once, without changing any state: each
    layer's output is recorded by a forward hook, and the autograd graph is walked from each layer's input back
    to recorded outputs (a walk that reaches a leaf -- the input or a parameter -- records ``None``)."""
    outputs: dict[object, int] = {}  # grad_fn of a layer's output -> layer index
    inputs: dict[int, list[torch.Tensor]] = {}
    calls = [0] * len(layers)
    names = qualified_names(module)

    def pre_hook(i: int):
        def hook(_m, args):
            inputs[i] = [a for a in args if isinstance(a, torch.Tensor)]
        return hook

    def post_hook(i: int):
        def hook(_m, _args, out):
            calls[i] += 1
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                outputs[out.grad_fn] = i
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(pre_hook(i)))
        handles.append(layer.register_forward_hook(post_hook(i)))
    was_training = module.training
    module.eval()  # no dropout draws, no running statistics moved
    try:
        x = example.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (call or module)(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    for i, n in enumerate(calls):
        if n != 1:
            raise ConfigError(f"layer {names.get(id(layers[i]), '?')!r} is called {n} times in one forward pass; "
                              f"a per-layer mask or connectivity needs each Linear/Conv2d called exactly once "
                              f"(give a reused layer its own module per use)")
    sources: list[list[int | None]] = []
    for i in range(len(layers)):
        found: list[int | None] = []
        seen: set[object] = set()
        stack = [t.grad_fn if t.grad_fn is not None else "leaf" for t in inputs.get(i, [])]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node == "leaf" or node is None:
                continue
            if node in outputs:
                found.append(outputs[node])
                continue
            nexts = [n for n, _ in node.next_functions if n is not None]
            if not nexts or type(node).__name__ == "AccumulateGrad":
                found.append(None)  # a leaf: the input or a parameter outside the layers
            stack.extend(nexts)
        ordered = sorted({s for s in found if s is not None})
        sources.append([*ordered, *([None] if None in found or not found else [])])
    return sources


__all__ = ["LAYER_TYPES", "layer_sources", "qualified_names", "replace_layers"]
