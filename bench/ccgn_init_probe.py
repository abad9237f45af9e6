"""Why `ccgn` starts its kernels from He's initialisation (docs/ccgn.md, `kernel_init`): the training loss of a
plain `simple-cnn` (no gates) on one Split MNIST pair, SGD as in the CCGN CPU budget (lr 0.05, momentum 0.9,
weight decay 5e-4, gradient norm clipped at 1, batch 128, 3,000 training images per digit), from PyTorch's
default initialisation and from He's.

    OMP_NUM_THREADS=1 python bench/ccgn_init_probe.py --data-dir ../shared/data --pair 2,3
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from forgetless.data import load
from forgetless.nn.backbones import SimpleCNN
from forgetless.nn.gates import GatedKernels


def losses(x: torch.Tensor, y: torch.Tensor, init: str, steps: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    net, head = SimpleCNN((1, 28, 28)), torch.nn.Linear(100, 2)
    for conv in (net.conv1, net.conv2, net.conv3):
        GatedKernels([conv]).reinitialise(init=init)
    params = [*net.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(len(y), (128,), generator=g)
        loss = F.cross_entropy(head(net(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        out.append(loss.item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pair", default="2,3")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a, b = (int(c) for c in args.pair.split(","))
    ds = load("mnist", args.data_dir)
    idx = torch.cat([torch.nonzero(ds.train_y == c).flatten()[:3000] for c in (a, b)])
    x, y = ds.train_x[idx].float() / 255, (ds.train_y[idx] == b).long()
    curves = {init: losses(x, y, init, args.steps, args.seed) for init in ("default", "kaiming")}
    print("step  default  kaiming")
    for step in range(0, args.steps, 10):
        print(f"{step:4d}  {curves['default'][step]:7.3f}  {curves['kaiming'][step]:7.3f}")


if __name__ == "__main__":
    main()
