"""Parameter importance for the quadratic-penalty baselines and the penalty they share.

- :func:`fisher_diagonal`: the diagonal Fisher information of EWC / online EWC (Kirkpatrick et al., 2017;
  Schwarz et al., 2018), the mean over samples of the squared gradient of the log-likelihood.
- :func:`output_sensitivity`: MAS (Aljundi et al., 2018), the mean over samples of the absolute gradient
  of the squared L2 norm of the output.
- :class:`PathIntegral`: SI (Zenke et al., 2017), the running sum of -g * delta(theta) over a task,
  normalised by the squared parameter change plus a damping xi.
- :func:`quadratic_penalty`: sum over anchors of importance * (theta - theta*)^2.
- :class:`AnchorSum`: the same sum over any number of anchors kept as one anchor and a constant, so that
  the penalty of t finished tasks costs one pass and one anchor's memory, not t.

Reading of :class:`AnchorSum`. For every parameter, sum_t F_t (theta - theta*_t)^2 = A theta^2 - 2 B theta + C
with A = sum_t F_t, B = sum_t F_t theta*_t, C = sum_t F_t theta*_t^2. That expanded form cancels
catastrophically in float32: near the anchors A theta^2 and C are far larger than their difference (EWC's
class-IL lambda is 1e9, so the parameters barely move). Measured by ``bench/penalty_numerics.py`` against a
float64 loop (200k parameters of size 0.05, 10 anchors drifting 1e-5 per task, Fisher exp(-10 + 3 z)), the
relative errors of loss and gradient are 5.5e-7 and 1.1e-5 for the float32 loop, 2.4e-3 and 2.8e-5 for the
expanded form (parameters of size 0.3, drift 1e-6: its loss is 100 % off). The equal form A (theta - mu)^2 +
D, mu = B / A and D = C - B^2 / A = sum_t F_t (theta*_t - mu)^2, subtracts no large numbers: 7.5e-7 and
1.9e-5, the loop's precision (at size 0.3, drift 1e-6: gradient 8.2e-4 as the loop's 7.4e-4, loss 2e-4 against
4e-5, from rounding mu to float32; both are float32's resolution of theta there).
mu, A and D are updated per new anchor with the pooled-variance recurrence (A' = A + F, mu' = mu + F / A'
(theta* - mu), D' = D + A F / A' (theta* - mu)^2), computed in float64 and stored as float32 (mu, A) and
one float64 number (D, which only shifts the loss's value); where A' = 0 the term is zero whatever mu is.

Per-sample gradient statistics are computed for a batch of samples at once, never with a Python loop over
samples: exactly from layer inputs and output gradients for networks made of Linear layers, with
``torch.func.vmap`` over per-sample gradients for any other network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..benchmarks.base import Split
from ..metrics import tensor_bytes
from .distillation import positions

Params = dict[str, torch.Tensor]


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a penalty protects: every parameter that trains."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def detached(params: dict[str, torch.Tensor]) -> Params:
    return {n: p.detach().clone() for n, p in params.items()}


@dataclass
class Anchor:
    """One quadratic term: parameter values theta* and their importance."""

    params: Params
    importance: Params

    def nbytes(self) -> int:
        return tensor_bytes(list(self.params.values()) + list(self.importance.values()))


def quadratic_penalty(params: dict[str, torch.Tensor], anchors: list[Anchor]) -> torch.Tensor:
    """sum_anchors sum_i importance_i * (theta_i - theta*_i)^2 (no factor 1/2: callers apply their own)."""
    total = None
    for anchor in anchors:
        for name, p in params.items():
            term = (anchor.importance[name] * (p - anchor.params[name]).pow(2)).sum()
            total = term if total is None else total + term
    if total is None:
        return torch.zeros((), device=next(iter(params.values())).device)
    return total


class AnchorSum:
    """sum_t sum_i F_t,i (theta_i - theta*_t,i)^2 over every anchor added, stored as A (theta - mu)^2 + D.

    Same value and gradient as :func:`quadratic_penalty` over the list of anchors (to float rounding; with
    one anchor it is that anchor, bit for bit), at the cost of one anchor whatever their number: see the
    module docstring for the reading and the numerics.
    """

    def __init__(self) -> None:
        self.anchor: Anchor | None = None  # params: mu, importance: A
        self.constant = 0.0  # D, summed over parameters: a constant of the loss, not of its gradient
        self.count = 0

    def add(self, params: Params, importance: Params) -> None:
        self.count += 1
        if self.anchor is None:
            self.anchor = Anchor({n: p.detach().clone() for n, p in params.items()},
                                 {n: f.detach().clone() for n, f in importance.items()})
            return
        mu, weight = self.anchor.params, self.anchor.importance
        for name, f in importance.items():
            a, m = weight[name].double(), mu[name].double()
            f, diff = f.detach().double(), params[name].detach().double() - m
            total = a + f
            share = torch.where(total > 0, f / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
            self.constant += float((a * share * diff.square()).sum())
            mu[name] = (m + share * diff).to(mu[name].dtype)
            weight[name] = total.to(weight[name].dtype)

    def penalty(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        total = quadratic_penalty(params, [] if self.anchor is None else [self.anchor])
        return total + self.constant if self.constant else total

    def nbytes(self) -> int:
        return 0 if self.anchor is None else self.anchor.nbytes()


def _chunk(n_params: int) -> int:
    # a chunk's per-sample gradients hold chunk * n_params floats: keep them near 128 MB
    return max(1, min(256, (1 << 25) // max(n_params, 1)))


SampleFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_statistic(model: nn.Module, split: Split, sample_loss: SampleFn, targets: SampleFn, power: int,
                       samples: int | None = None, generator: torch.Generator | None = None,
                       device: torch.device | None = None) -> Params:
    """(1/N) sum_n |d loss_n / d theta|^power for every trainable parameter, loss_n = sample_loss(model(x_n), t_n).

    ``sample_loss(outputs, targets)`` returns one loss per sample of a batch (each depending on its own
    sample only); ``targets(logits, y)`` turns outputs computed without gradient and the labels into the
    per-sample targets. The model runs in eval mode on un-augmented inputs; ``samples`` draws that many
    samples at random (None: all of ``split``).
    """
    params = trainable(model)
    device = device or next(iter(params.values())).device
    n = len(split)
    order = torch.arange(n) if samples is None or samples >= n else torch.randperm(n, generator=generator)[:samples]
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    linear = _linear_layers(model, params)
    step = 1024 if linear is not None else _chunk(sum(p.numel() for p in params.values()))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), step):
            x, y = split.batch(order[start : start + step].to(split.device))
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t = targets(model(x), y)
            stats = None if linear is None else _linear_statistic(model, linear, x, t, sample_loss, power)
            if stats is None:
                stats = _vmap_statistic(model, params, x, t, sample_loss, power)
            for name, value in stats.items():
                total[name] += value
    finally:
        model.train(was_training)
    return {name: value / max(len(order), 1) for name, value in total.items()}


def _linear_layers(model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, nn.Linear] | None:
    """The Linear layers holding every trainable parameter, by name; None if some parameter lives elsewhere."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    owned = {f"{name}.{p}" for name, m in layers.items() for p, _ in m.named_parameters(recurse=False)}
    return layers if set(params) <= owned else None


def _linear_statistic(model: nn.Module, layers: dict[str, nn.Linear], x: torch.Tensor, t: torch.Tensor,
                      sample_loss: SampleFn, power: int) -> Params | None:
    """Exact per-sample statistic for Linear layers without materialising per-sample gradients: the
    gradient of sample n for W is delta_n a_n^T, so sum_n |delta_n a_n^T|^p = (|delta|^p)^T |a|^p."""
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in layers}

    def hook(name):
        return lambda module, inputs, output: seen[name].append((inputs[0], output))

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        losses = sample_loss(model(x), t)
    finally:
        for h in handles:
            h.remove()
    used = {name: v for name, v in seen.items() if v}
    if any(len(v) != 1 or v[0][0].dim() != 2 for v in used.values()):
        return None  # a layer applied twice or to sequences: per-sample gradients do not factor
    deltas = torch.autograd.grad(losses.sum(), [v[0][1] for v in used.values()], allow_unused=True)
    stats: Params = {}
    for (name, [(a, _)]), d in zip(used.items(), deltas, strict=True):
        if d is None:
            continue
        a_p, d_p = a.detach().abs().pow(power), d.abs().pow(power)
        stats[f"{name}.weight"] = d_p.t() @ a_p
        if layers[name].bias is not None:
            stats[f"{name}.bias"] = d_p.sum(0)
    return stats


def _vmap_statistic(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, t: torch.Tensor,
                    sample_loss: SampleFn, power: int) -> Params:
    detached_params = {n: p.detach() for n, p in params.items()}
    buffers = dict(model.named_buffers())

    def one(p: Params, xi: torch.Tensor, ti: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return sample_loss(out, ti.unsqueeze(0)).sum()

    grads = vmap(grad(one), in_dims=(None, 0, 0))(detached_params, x, t)
    return {name: g.abs().pow(power).sum(0) for name, g in grads.items()}


def fisher_diagonal(model: nn.Module, split: Split, labels: list[int], empirical: bool = False,
                    samples: int | None = None, generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> Params:
    """Diagonal Fisher information: E_x[(d log p(y|x) / d theta)^2] with p the softmax over ``labels``.

    ``y`` is the model's own prediction (van de Ven & Tolias' default) or, with ``empirical``, the true
    label (the "empirical Fisher").
    """
    keep = torch.as_tensor(labels, dtype=torch.long, device=device)

    def targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        index = positions(y, keep) if empirical else logits[:, keep].argmax(1)
        return F.one_hot(index, len(keep)).to(logits.dtype)

    def nll(out: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return -(F.log_softmax(out[:, keep], dim=1) * onehot).sum(1)

    return gradient_statistic(model, split, nll, targets, power=2, samples=samples, generator=generator,
                              device=device)


def output_sensitivity(model: nn.Module, split: Split, labels: list[int], samples: int | None = None,
                       generator: torch.Generator | None = None, device: torch.device | None = None) -> Params:
    """MAS importance: E_x[|d ||f(x)||_2^2 / d theta|] over the outputs ``labels`` (Aljundi et al., 2018, Eq. 2)."""
    keep = torch.as_tensor(labels, dtype=torch.long, device=device)

    def targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(y), device=logits.device)

    def squared_norm(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return out[:, keep].pow(2).sum(1)

    return gradient_statistic(model, split, squared_norm, targets, power=1, samples=samples, generator=generator,
                              device=device)


class PathIntegral:
    """Synaptic Intelligence's importance estimate (Zenke et al., 2017).

    After every optimiser step, ``w += -grad * (theta_new - theta_old)`` (the gradient of the loss that was
    minimised, as in van de Ven & Tolias' code); at the end of a task ``omega = w / ((theta_end -
    theta_start)^2 + xi)`` and ``w`` restarts from zero.
    """

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.start = detached(params)
        self.previous = detached(params)
        self.w = {n: torch.zeros_like(p) for n, p in self.start.items()}

    def step(self, params: dict[str, nn.Parameter]) -> None:
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is not None:
                    self.w[name] -= p.grad * (p - self.previous[name])
                self.previous[name] = p.detach().clone()

    def consolidate(self, params: dict[str, torch.Tensor], xi: float) -> Params:
        """The new importance of this task; the end point becomes the start of the next task."""
        omega = {}
        for name, p in params.items():
            change = p.detach() - self.start[name]
            omega[name] = self.w[name] / (change.pow(2) + xi)
            self.w[name] = torch.zeros_like(self.w[name])
        self.start = detached(params)
        self.previous = detached(params)
        return omega

    def nbytes(self) -> int:
        return tensor_bytes(list(self.start.values()) + list(self.previous.values()) + list(self.w.values()))
