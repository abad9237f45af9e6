"""PNG plots: accuracy matrices as heat maps (with a colour bar), average accuracy per task curves, and for
one run (``forgetless plot RUN_DIR``) its matrix, its per-task accuracy curves and its loss curves from the log."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def save_image_grid(images: torch.Tensor, path: Path) -> Path:
    """A PNG of ``images`` (rows, columns, C, H, W) in [0, 1]: one image per cell, grey when C is 1. Sample
    grids of the generative memories (DGM, CCGN) after each task."""
    rows, cols, c, h, w = images.shape
    grid = images.detach().float().cpu().clamp(0, 1).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    if c == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, grid)
    return path


def mean_matrix(results: list[dict[str, Any]]) -> np.ndarray:
    n = len(results[0]["accuracy"])
    mats = np.full((len(results), n, n), np.nan)
    for r_i, r in enumerate(results):
        for i, row in enumerate(r["accuracy"]):
            mats[r_i, i, : i + 1] = row[: i + 1]
    if len(results) == 1:
        return mats[0]
    with warnings.catch_warnings():  # the upper triangle is all-NaN by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(mats, axis=0)


def accuracy_heatmaps(by_method: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> None:
    plt = _pyplot()
    methods = [m for m, rs in by_method.items() if rs and rs[0].get("accuracy")]
    if not methods:
        return
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods) + 0.8, 3.6), squeeze=False)
    image = None
    for ax, m in zip(axes[0], methods, strict=True):
        image = _matrix(ax, mean_matrix(by_method[m]))
        ax.set_title(m if len(by_method[m]) == 1 else f"{m} (mean of {len(by_method[m])})")
    fig.colorbar(image, ax=axes[0].tolist(), label="test accuracy", fraction=0.05, pad=0.04)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _matrix(ax, mat: np.ndarray):
    """accuracy[i][j] as a lower-triangular heat map with the values written in (percent)."""
    image = ax.imshow(np.ma.masked_invalid(mat), vmin=0, vmax=1, cmap="viridis")
    n = mat.shape[0]
    for i in range(n):
        for j in range(i + 1):
            ax.text(j, i, f"{100 * mat[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if mat[i, j] < 0.6 else "black")
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after learning task")
    ax.set_xticks(range(n), [str(k + 1) for k in range(n)])
    ax.set_yticks(range(n), [str(k + 1) for k in range(n)])
    return image


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def run_title(result: dict[str, Any]) -> str:
    return f"{result['method']} on {result['benchmark']}, {result['scenario']}-IL, seed {result['seed']}"


def run_plots(result: dict[str, Any], log: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """For one run: ``accuracy_matrix.png`` (colour bar, title), ``accuracy_curves.png`` (each task's accuracy
    as tasks are learned, and the average over the tasks seen) and ``losses.png`` (every logged loss-like value
    against the step, one panel per key, tasks one after another)."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    rows = result.get("accuracy") or []
    title = run_title(result)
    if rows:
        n = len(rows)
        mat = np.full((n, n), np.nan)
        for i, row in enumerate(rows):
            mat[i, : min(len(row), i + 1)] = row[: i + 1]
        fig, ax = plt.subplots(figsize=(0.55 * n + 2.6, 0.55 * n + 1.8))
        fig.colorbar(_matrix(ax, mat), ax=ax, label="test accuracy")
        ax.set_title(title, fontsize=9)
        _save(fig, out_dir / "accuracy_matrix.png")
        written.append(out_dir / "accuracy_matrix.png")

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        x = np.arange(1, n + 1)
        for j in range(n):
            ax.plot(x[j:], [100 * rows[i][j] for i in range(j, n)], marker=".", label=f"task {j + 1}")
        ax.plot(x, [100 * np.mean(rows[i][: i + 1]) for i in range(n)], color="black", lw=2, label="average")
        ax.set_xticks(x)
        ax.set_xlabel("number of tasks learned")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(title, fontsize=9)
        _save(fig, out_dir / "accuracy_curves.png")
        written.append(out_dir / "accuracy_curves.png")

    plotted = ("loss", "penalty", "sparsity")
    keys = sorted({k for r in log if "step" in r for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and (any(p in k for p in plotted) or k.startswith(("mask_", "probe_")))})
    if keys:
        fig, axes = plt.subplots(len(keys), 1, figsize=(6.5, 1.9 * len(keys) + 0.6), squeeze=False, sharex=True)
        for ax, key in zip(axes[:, 0], keys, strict=True):
            offset, last_task, xs, ys, starts = 0, None, [], [], []
            for r in log:
                if key not in r or "step" not in r:
                    continue
                if r.get("task") != last_task:  # tasks one after another on one axis
                    offset = (xs[-1] + 1) if xs else 0
                    last_task = r.get("task")
                    starts.append(offset)
                xs.append(offset + r["step"])
                ys.append(r[key])
            ax.plot(xs, ys, lw=1)
            for s0 in starts[1:]:
                ax.axvline(s0, color="grey", lw=0.6, ls="--")
            ax.set_ylabel(key, fontsize=8)
            if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("optimiser step (tasks one after another; dashed: task boundaries)")
        fig.suptitle(title, fontsize=9)
        _save(fig, out_dir / "losses.png")
        written.append(out_dir / "losses.png")
    return written


def accuracy_curves(by_method: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Average accuracy over the tasks seen so far, after each task (mean and std over seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, rs in by_method.items():
        if not rs or not rs[0].get("accuracy"):
            continue
        curves = np.array([[np.mean(row[: i + 1]) for i, row in enumerate(r["accuracy"])] for r in rs])
        x = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(x, 100 * mean, marker="o", label=m)
        ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.2)
    ax.set_xticks(np.arange(1, max(len(rs[0]["accuracy"]) for rs in by_method.values() if rs) + 1))
    ax.set_xlabel("number of tasks learned")
    ax.set_ylabel("average accuracy on tasks seen (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
