"""Shared fixtures: the real data root (MNIST tests skip with a clear reason when it is absent) and small
synthetic benchmarks for unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from forgetless import benchmarks

REPO = Path(__file__).resolve().parents[1]
_DATA_CANDIDATES = [os.environ.get("FORGETLESS_DATA"), str(REPO.parent / "shared" / "data")]


def real_data_root() -> Path | None:
    for candidate in _DATA_CANDIDATES:
        if candidate and (Path(candidate) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Directory holding mnist/ (from $FORGETLESS_DATA or ../shared/data); skips the test when absent."""
    root = real_data_root()
    if root is None:
        pytest.skip("real MNIST not found: set FORGETLESS_DATA to a directory holding mnist/*.gz "
                    "(CI uses ../shared/data)")
    return root


def pytest_configure(config):
    """One torch thread for the whole suite: the networks here are small (one thread is as fast), and on a
    loaded 2-core machine two OpenMP threads per process spin against each other (a 20 s test took 6 min)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Unit tests never touch the network: a download attempt fails fast, as when offline."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def synthetic_benchmark(scenario: str = "class", n_tasks: int = 3, classes_per_task: int = 2, per_class: int = 60,
                        shape: tuple[int, ...] = (1, 8, 8), seed: int = 0, separable: bool = True):
    """Gaussian blobs, one per class, rendered as uint8 images: learnable in a few steps on a CPU."""
    g = torch.Generator().manual_seed(seed)
    n_classes = n_tasks * classes_per_task
    centres = torch.rand(n_classes, *shape, generator=g) * (200 if separable else 40) + 20
    xs, ys = [], []
    for c in range(n_classes):
        noise = torch.randn(per_class, *shape, generator=g) * 20
        xs.append((centres[c] + noise).clamp(0, 255).to(torch.uint8))
        ys.append(torch.full((per_class,), c))
    return benchmarks.from_tensors(torch.cat(xs), torch.cat(ys), classes_per_task=classes_per_task,
                                   scenario=scenario, seed=seed, name="synthetic")


def learn_task_by_task(method, bench) -> list[list[torch.Tensor]]:
    """Train ``method`` on every task of ``bench`` in order (fixed per-task generators), and after each task
    record its test logits on every task seen so far: ``history[i][j]`` for task j after task i."""
    from forgetless.training import Context

    history = []
    for i, task in enumerate(bench.tasks):
        method.train()
        method.learn(task, Context(generator=torch.Generator().manual_seed(100 + i), task_index=i,
                                   n_tasks=len(bench.tasks)))
        method.eval()
        with torch.no_grad():
            history.append([method.predict(t.test.inputs(), t.id) for t in bench.tasks[: i + 1]])
    return history


@pytest.fixture
def tiny_bench():
    return synthetic_benchmark


@pytest.fixture
def one_thread():
    """One torch thread while a test runs: small networks train faster so, and on a loaded 2-core machine two
    threads per process make every op crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
