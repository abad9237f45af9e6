"""PNG plots for comparisons: accuracy matrices as heat maps, average accuracy per task curves."""

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


def accuracy_heatmaps(by_method: dict[str, list[dict[str, Any]]], path: Path) -> None:
    plt = _pyplot()
    methods = [m for m, rs in by_method.items() if rs and rs[0].get("accuracy")]
    if not methods:
        return
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        mat = mean_matrix(by_method[m])
        ax.imshow(np.ma.masked_invalid(mat), vmin=0, vmax=1, cmap="viridis")
        n = mat.shape[0]
        for i in range(n):
            for j in range(i + 1):
                ax.text(j, i, f"{100 * mat[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if mat[i, j] < 0.6 else "black")
        ax.set_title(m)
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after learning task")
        ax.set_xticks(range(n), [str(k + 1) for k in range(n)])
        ax.set_yticks(range(n), [str(k + 1) for k in range(n)])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
