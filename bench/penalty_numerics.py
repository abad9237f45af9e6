"""Precision of three float32 forms of sum_t F_t (theta - theta*_t)^2 against a float64 loop (not a speed benchmark).

    python bench/penalty_numerics.py [DRIFT SCALE]

loop: the sum over stored anchors; expanded: A theta^2 - 2 B theta + C; stable: A (theta - mu)^2 + D as
:class:`forgetless.training.penalties.AnchorSum` keeps it. 200k parameters of size SCALE (0.05), 10 anchors
drifting DRIFT (1e-5) per task, theta DRIFT from the last anchor, Fisher exp(-10 + 3 z). Prints the relative
error of the loss and of the gradient (norm) of each form.
"""

from __future__ import annotations

import sys

import torch

from forgetless.training.penalties import Anchor, AnchorSum, quadratic_penalty


def value_and_grad(fn, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    theta = theta.clone().requires_grad_()
    value = fn({"w": theta})
    value.backward()
    return value.detach().double(), theta.grad.double()


def main(drift: float = 1e-5, scale: float = 0.05, n: int = 200_000, tasks: int = 10) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, generator=g, dtype=torch.float64) * scale
    stars = [base + torch.randn(n, generator=g, dtype=torch.float64) * drift * (t + 1) for t in range(tasks)]
    fishers = [torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 3 - 10) for _ in range(tasks)]
    theta = stars[-1] + torch.randn(n, generator=g, dtype=torch.float64) * drift
    exact = [Anchor({"w": s}, {"w": f}) for s, f in zip(stars, fishers, strict=True)]
    ref_v, ref_g = value_and_grad(lambda p: quadratic_penalty(p, exact), theta)

    anchors = [Anchor({"w": s.float()}, {"w": f.float()}) for s, f in zip(stars, fishers, strict=True)]
    a = sum(x.importance["w"] for x in anchors)
    b = sum(x.importance["w"] * x.params["w"] for x in anchors)
    c = sum((x.importance["w"] * x.params["w"].square()).sum() for x in anchors)
    summed = AnchorSum()
    for x in anchors:
        summed.add(x.params, x.importance)
    forms = {
        "loop": lambda p: quadratic_penalty(p, anchors),
        "expanded": lambda p: (a * p["w"].square()).sum() - 2 * (b * p["w"]).sum() + c,
        "stable": summed.penalty,
    }
    for name, fn in forms.items():
        v, grad = value_and_grad(fn, theta.float())
        print(f"{name:9s} loss rel. error {abs(float(v - ref_v)) / float(ref_v):.1e}, "
              f"gradient {float((grad - ref_g).norm() / ref_g.norm()):.1e}")


if __name__ == "__main__":
    main(*map(float, sys.argv[1:3]))
