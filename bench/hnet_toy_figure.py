"""Fig. 2 of the hypernetwork paper: the three toy-regression fits after learning all tasks, with the output
regularizer (beta = 0.005) and without it (beta = 0, plain fine-tuning of the hypernetwork).

    python bench/hnet_toy_figure.py --out docs/hnet-toy-regression.png [--seed 0] [--iterations 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from forgetless import benchmarks, runner
from forgetless.benchmarks.toy_regression import task_function
from forgetless.methods import create


def fit(beta: float, seed: int = 0, iterations: int | None = None) -> dict[str, Any]:
    """Train ``hnet`` on toy-regression with ``beta``; the fitted curves of every task after the last one."""
    bench = benchmarks.build("toy-regression", "task", seed)
    overrides: dict[str, Any] = {"beta": beta}
    if iterations is not None:
        overrides["iterations"] = iterations
    method = create("hnet", bench.info(), **overrides)
    result = runner.run(method, bench, scenario="task", seed=seed, quiet=True)
    method.eval()
    curves = []
    with torch.no_grad():
        for t, task in enumerate(bench.tasks):
            name, f, (low, high) = task_function(t)
            x = torch.linspace(low - 0.5, high + 0.5, 200).unsqueeze(1)
            curves.append({"name": name, "x": x.flatten(), "truth": f(x).flatten(),
                           "fit": method.predict(x, task_id=t).flatten(),
                           "train_x": task.train.x.flatten(), "train_y": task.train.y.flatten()})
    return {"beta": beta, "mse": result["mse"][-1], "curves": curves}


def plot(path: str | Path, seed: int = 0, iterations: int | None = None, betas: tuple[float, float] = (0.005, 0.0)
         ) -> list[dict[str, Any]]:
    """Write the two-panel figure (regularizer on / off) to ``path``; returns the fits."""
    from forgetless.plots import _pyplot

    plt = _pyplot()
    fits = [fit(b, seed, iterations) for b in betas]
    fig, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 3.6), squeeze=False, sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green"]
    for ax, res in zip(axes[0], fits, strict=True):
        for c, curve in zip(colours, res["curves"], strict=False):
            ax.plot(curve["x"], curve["truth"], color="grey", lw=1, ls="--")
            ax.scatter(curve["train_x"], curve["train_y"], s=4, color=c, alpha=0.5)
            ax.plot(curve["x"], curve["fit"], color=c, lw=2, label=f"task {curve['name']}")
        title = f"output regularizer, beta = {res['beta']:g}" if res["beta"] > 0 else "fine-tuning (beta = 0)"
        mse = ", ".join(f"{m:.3g}" for m in res["mse"])
        ax.set_title(f"{title}\nfinal test MSE per task: {mse}", fontsize=9)
        ax.set_xlabel("x")
        ax.set_ylim(-4, 4)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("y")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/hnet-toy-regression.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=None, help="per task (default: the paper's 4000)")
    args = p.parse_args(argv)
    fits = plot(args.out, args.seed, args.iterations)
    for res in fits:
        print(f"beta={res['beta']:g}: final MSE per task {[round(m, 5) for m in res['mse']]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
