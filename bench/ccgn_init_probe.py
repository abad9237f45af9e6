"""Why `ccgn` starts its kernels from He's initialisation (docs/ccgn.md, `kernel_init`): the training loss of a
plain `simple-cnn` (no gates) on one Split MNIST pair, SGD as in the CCGN CPU budget (lr 0.05, momentum 0.9,
weight decay 5e-4, gradient norm clipped at 1, batch 128, 3,000 training images per digit), from PyTorch's
default initialisation and from He's.

    OMP_NUM_THREADS=1 python bench/ccgn_init_probe.py --data-dir ../shared/data --pair 2,3

With ``--epochs N`` it instead trains the plain network from He's initialisation on the pair's whole training
split for N epochs with the same optimiser and prints the test accuracy after each epoch: the ceiling of the
backbone itself under the CPU budget (docs/ccgn.md, "Acceptance results"). Inputs are standardised with the
pair's training statistics, as `ccgn`'s default `input_norm=first-task` does; ``--raw`` keeps pixels in [0, 1].
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from forgetless.data import load
from forgetless.nn.backbones import SimpleCNN
from forgetless.nn.gates import GatedKernels
from forgetless.nn.standardize import InputStandardizer


def plain_network(init: str, seed: int):
    torch.manual_seed(seed)
    net, head = SimpleCNN((1, 28, 28)), torch.nn.Linear(100, 2)
    for conv in (net.conv1, net.conv2, net.conv3):
        GatedKernels([conv]).reinitialize(init=init)
    params = [*net.parameters(), *head.parameters()]
    return net, head, params, torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def sgd_step(net, head, params, opt, x: torch.Tensor, y: torch.Tensor) -> float:
    loss = F.cross_entropy(head(net(x)), y)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def losses(x: torch.Tensor, y: torch.Tensor, init: str, steps: int, seed: int) -> list[float]:
    net, head, params, opt = plain_network(init, seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(len(y), (128,), generator=g)
        out.append(sgd_step(net, head, params, opt, x[idx], y[idx]))
    return out


def epoch_accuracies(train, test, epochs: int, seed: int, raw: bool = False) -> list[float]:
    """Test accuracy after each epoch of shuffled batches of 128, He's initialisation."""
    (x, y), (xt, yt) = train, test
    if not raw:
        norm = InputStandardizer(x.shape[1])
        norm.fit(x)
        x, xt = norm(x), norm(xt)
    net, head, params, opt = plain_network("kaiming", seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 128):
            sgd_step(net, head, params, opt, x[order[i : i + 128]], y[order[i : i + 128]])
        with torch.no_grad():
            out.append((head(net(xt)).argmax(1) == yt).float().mean().item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pair", default="2,3")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="report test accuracy per epoch instead")
    parser.add_argument("--raw", action="store_true", help="with --epochs: do not standardise the inputs")
    args = parser.parse_args()
    a, b = (int(c) for c in args.pair.split(","))
    ds = load("mnist", args.data_dir)

    def pair(xs: torch.Tensor, ys: torch.Tensor, per_class: int | None):
        idx = torch.cat([torch.nonzero(ys == c).flatten()[:per_class] for c in (a, b)])
        return xs[idx].float() / 255, (ys[idx] == b).long()

    if args.epochs:
        accs = epoch_accuracies(pair(ds.train_x, ds.train_y, None), pair(ds.test_x, ds.test_y, None),
                                args.epochs, args.seed, args.raw)
        for epoch, acc in enumerate(accs, 1):
            print(f"epoch {epoch}: test accuracy {100 * acc:.2f}")
        return
    x, y = pair(ds.train_x, ds.train_y, 3000)
    curves = {init: losses(x, y, init, args.steps, args.seed) for init in ("default", "kaiming")}
    print("step  default  kaiming")
    for step in range(0, args.steps, 10):
        print(f"{step:4d}  {curves['default'][step]:7.3f}  {curves['kaiming'][step]:7.3f}")


if __name__ == "__main__":
    main()
