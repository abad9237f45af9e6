"""Hypernetwork speed (von Oswald et al., 2020): the cost of one ``hnet`` training step in the split MNIST
setting (chunked hypernetwork of 465,192 weights + embeddings generating a 784-400-400-10 MLP, output
regularizer with lookahead over 4 past tasks) against one plain Adam step of that MLP, plus whole runs
of hnet / hnet-r / hnet-tir against finetune (time per task).

The authors' library (hypnettorch) is timed on the same step by ``hnet_reference.py step``. Here both steps use the
same batch and loss; the plain step uses torch's default Adam as ``finetune`` does. Timings are medians
of wall time and of this thread's CPU time (the latter is steadier on a shared machine).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.benchmarks.base import BenchmarkInfo
from forgetless.methods import create
from forgetless.methods.base import make_optimizer
from forgetless.nn import backbones

from common import time_run


def split_mnist_info() -> BenchmarkInfo:
    return BenchmarkInfo(name="split-mnist", scenario="task", n_tasks=5, input_shape=(1, 28, 28), n_outputs=10,
                         task_labels=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)), dataset="mnist")


def _medians(fn, repeat: int, warmup: int = 5) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        cpus.append(time.thread_time() - c)
        walls.append(time.perf_counter() - w)
    return statistics.median(walls), statistics.median(cpus)


def plain_mlp_step(x: torch.Tensor, y: torch.Tensor, config, device: str = "cpu"):
    """One plain Adam step of the 784-400-400-10 MLP on (x, y) (labels 8, 9; torch's default Adam, as finetune
    uses), as a closure: the reference every hypernetwork step is divided by."""
    plain = nn.Sequential(backbones.create("mlp", (1, 28, 28), hidden=(400, 400)), nn.Linear(400, 10)).to(device)
    opt = make_optimizer(plain.parameters(), config)

    def step() -> None:
        loss = F.cross_entropy(plain(x)[:, 8:10], y - 8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_timings(repeat: int = 50, past_tasks: int = 4, device: str = "cpu") -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 28, 28, generator=g).to(device)
    y = torch.randint(8, 10, (128,), generator=g).to(device)

    method = create("hnet", split_mnist_info()).to(device)
    for t in range(past_tasks):  # stored embeddings of earlier tasks (their values do not affect the cost)
        method.finish_task(method.start_task(t, g))
    session = method.start_task(past_tasks, g)

    plain_step = plain_mlp_step(x, y, method.config, device)

    def hnet_step():
        method.train_step(session, x, y)

    # Interleave the two so that both see the same machine load.
    rounds = [(_medians(plain_step, repeat), _medians(hnet_step, repeat)) for _ in range(3)]
    plain_wall = statistics.median(r[0][0] for r in rounds)
    plain_cpu = statistics.median(r[0][1] for r in rounds)
    hnet_wall = statistics.median(r[1][0] for r in rounds)
    hnet_cpu = statistics.median(r[1][1] for r in rounds)
    counts = method.hnet_counts()
    note = (f"batch 128; hnet {counts['hnet_weights']:,} weights -> {counts['target_weights']:,} target weights "
            f"in {counts['n_chunks']} chunks; Eq. 2 with lookahead over {past_tasks} past tasks")
    return [
        {"method": "plain MLP step (Adam)", "backbone": "mlp 400-400", "seconds_per_step": plain_wall,
         "cpu_seconds_per_step": plain_cpu, "ratio": 1.0,
         "note": f"784-400-400-10, cross-entropy on one task; CPU {plain_cpu * 1e3:.2f} ms"},
        {"method": "hnet step", "backbone": "mlp 400-400", "seconds_per_step": hnet_wall,
         "cpu_seconds_per_step": hnet_cpu, "ratio": hnet_wall / plain_wall, "cpu_ratio": hnet_cpu / plain_cpu,
         "note": f"{note}; CPU {hnet_cpu * 1e3:.2f} ms = {hnet_cpu / plain_cpu:.2f}x"},
    ]


def bench(args) -> list[dict]:
    torch.manual_seed(0)
    rows = step_timings(repeat=20 if args.quick else 50, device=args.device)
    it = 50 if args.quick else 200
    cfg = {"iterations": it, "batch_size": 128}
    runs = [time_run("finetune", "split-mnist", "task", cfg, data_root=args.data_dir, device=args.device)]
    for m in ("hnet", "hnet-r", "hnet-tir"):
        scenario = "class" if m == "hnet-tir" else "task"  # hnet-tir only trains its replay parts outside task-IL
        runs.append(time_run(m, "split-mnist", scenario, cfg, data_root=args.data_dir, device=args.device))
    base = runs[0]["seconds_per_task"]
    for r in runs:
        r["ratio_to_finetune"] = r["seconds_per_task"] / base
        r["note"] = f"{it} iterations of batch 128 per task, split-mnist {r['scenario']}"
    return rows + runs
