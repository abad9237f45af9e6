"""Cost of one EWC training step against one fine-tuning step, after k finished tasks of permuted MNIST
(MLP 1024-400-400-10, batch 128, Adam, the default lambda), and the bytes EWC keeps for its penalty.

Both steps are the body of ``SequentialClassifier.learn`` (forward, cross-entropy, the method's extra loss,
backward, Adam) on the same batch; the finished tasks are random Fisher values around slightly moved
parameters (their values do not change the cost). Times are medians of this thread's CPU time, the two
steps interleaved in rounds so that both see the same machine load; ``ratio`` is EWC over fine-tuning.
Runs against any forgetless on the path (``PYTHONPATH=<other>/src``) to compare versions.
"""

from __future__ import annotations

import statistics
import time

import torch

from forgetless.benchmarks.base import BenchmarkInfo
from forgetless.methods import create
from forgetless.training import config_optimizer

from common import timed

FINISHED = (0, 1, 4, 9)  # tasks 1, 2, 5 and 10 of permuted MNIST


def permuted_info() -> BenchmarkInfo:
    return BenchmarkInfo(name="permuted-mnist", scenario="domain", n_tasks=10, input_shape=(1, 32, 32),
                         n_outputs=10, task_labels=tuple(tuple(range(10)) for _ in range(10)), dataset="mnist")


def make_step(method, x: torch.Tensor, y: torch.Tensor):
    keep = method.active_mask(0)
    params = method.trained_parameters()
    optimizer = config_optimizer(params, method.config)

    def step() -> None:
        logits = method(x)
        loss = method.task_loss(logits, y, keep)
        extra = method.extra_loss(None, logits, None, None)
        total = loss if extra is None else loss + extra
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def cpu_median(fn, repeat: int, warmup: int = 3) -> float:
    return timed(fn, repeat, warmup, clock=time.thread_time)


def bench(args) -> list[dict]:
    repeat = 10 if args.quick else 30
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    info = permuted_info()
    torch.manual_seed(0)
    plain = make_step(create("finetune", info), x, y)
    rows = []
    for k in FINISHED:
        torch.manual_seed(0)
        ewc = create("ewc", info)
        for _ in range(k):
            with torch.no_grad():
                for p in ewc.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 1e-3)
            ewc.consolidate({n: torch.rand(p.shape, generator=g) * 1e-3 for n, p in ewc.named_parameters()})
        step = make_step(ewc, x, y)
        rounds = [(cpu_median(plain, repeat), cpu_median(step, repeat)) for _ in range(3)]
        plain_s = statistics.median(r[0] for r in rounds)
        ewc_s = statistics.median(r[1] for r in rounds)
        storage = ewc.storage()
        rows.append({
            "method": f"ewc step, task {k + 1}", "backbone": "mlp 400-400", "benchmark": "permuted-mnist",
            "seconds_per_step": ewc_s, "ratio": ewc_s / plain_s,
            "note": f"{k} finished tasks; fine-tuning step {plain_s * 1e3:.2f} ms CPU; penalty state "
                    f"{storage['penalty_bytes'] / 1e6:.1f} MB",
        })
    return rows


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    for row in bench(p.parse_args()):
        print(f"{row['method']}: {row['ratio']:.2f}x ({row['note']})", flush=True)
