"""One prepared check for a CUDA machine (issue 18): run it as a single script when a GPU is lent.

    python bench/gpu_check.py --data-dir DATA --out runs/gpu_check [--skip-paper] [--budget-s 480]

1. **Every method briefly on CUDA**, beside the CPU run of the same seed: split MNIST, two tasks, a short
   budget (the same options on both devices). The accuracy matrices must be close, not equal (CUDA kernels
   sum in another order): the largest difference is printed per method and flagged above 5 points.
   Beside them: the CUDA run under ``--amp bf16`` (methods that allow it), and the **host synchronisations
   per step**: the CUDA run at two step budgets under ``torch.cuda.set_sync_debug_mode("warn")``, counting
   torch's "synchronizing CUDA operation" warnings; what grows with the steps is a per-step sync (the CPU
   test tests/test_host_sync.py cannot see syncs inside torch, e.g. ``nonzero`` or boolean indexing).
2. **Steps per second** of a fine-tuning step through forgetless beside a plain PyTorch step of the same MLP
   and batch on the GPU (the ratio is the point).
3. **Paper-budget reproductions** that fit in the remaining ``--budget-s`` seconds, each through
   ``forgetless reproduce`` (so each row checkpoints per task and a later session resumes it with the same
   command): CCGN split MNIST task-IL at the paper's schedule (``ccgn-table1``), DGMw/DGMa 10-task MNIST at
   the paper's epochs (``dgm-table1``), CCGN's WGAN-GP generators at 2x10^5 iterations
   (``ccgn-table2-generative``). A row still running at the deadline is stopped; its finished tasks stay.

Everything is written to ``OUT/gpu_check.json`` as it is measured (never only at the end). On a machine
without CUDA the script says so and exits 2: CI never depends on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from forgetless import methods, precision, runner

# A short budget for every method, filtered per method to the options its config has.
SHORT = {"iterations": 60, "epochs": 1, "batch_size": 64, "pretrain_iterations": 60, "pretrain_epochs": 1,
         "gan_iterations": 50, "buffer_size": 200, "retrain_epochs": 1, "lr_patience": 0}
BENCH = {"n_tasks": 2, "train_per_class": 600, "test_per_class": 300}
PAPER_ROWS = [("ccgn-table1", "ccgn split-mnist"), ("dgm-table1", "DGMw MNIST"), ("dgm-table1", "DGMa MNIST"),
              ("ccgn-table2-generative", "ccgn split-mnist generative")]


def short_config(name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(methods.METHODS[name].cls.Config)}
    return {k: v for k, v in SHORT.items() if k in fields}


def scenario_of(name: str) -> str:
    scenarios = methods.METHODS[name].cls.scenarios
    return "task" if "task" in scenarios else scenarios[0]


def compare_devices(data_dir: str, names: list[str], report: dict[str, Any], save) -> None:
    rows = report.setdefault("cuda_vs_cpu", {})
    for name in names:
        bench = {**BENCH, "classes_per_task": 1, "n_tasks": 2} if name.startswith("dgm") else BENCH
        scenario = scenario_of(name)
        out: dict[str, Any] = {}
        try:
            for device in ("cpu", "cuda"):
                t0 = time.perf_counter()
                result = runner.run(name, "split-mnist", scenario=scenario, seed=0, config=short_config(name),
                                    bench_options=bench, data_root=data_dir, device=device, quiet=True)
                out[device] = {"accuracy": result["accuracy"], "seconds": time.perf_counter() - t0}
            diff = max(abs(a - b) for ra, rb in zip(out["cpu"]["accuracy"], out["cuda"]["accuracy"], strict=True)
                       for a, b in zip(ra, rb, strict=True))
            out["max_abs_difference"] = diff
            out["close"] = diff <= 0.05
            if name not in precision.REFUSED:
                bf16 = runner.run(name, "split-mnist", scenario=scenario, seed=0, config=short_config(name),
                                  bench_options=bench, data_root=data_dir, device="cuda", quiet=True, amp="bf16")
                out["bf16_max_abs_difference"] = max(
                    abs(a - b) for ra, rb in zip(out["cuda"]["accuracy"], bf16["accuracy"], strict=True)
                    for a, b in zip(ra, rb, strict=True))
            out["syncs_per_step"] = syncs_per_step(name, scenario, bench, data_dir)
        except Exception as exc:  # a method that fails on CUDA is a finding, not the end of the check
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows[name] = out
        save()
        shown = out.get("error") or (f"max |cpu - cuda| = {100 * out['max_abs_difference']:.2f} points"
                                     + ("" if out["close"] else "  <-- NOT CLOSE")
                                     + f", syncs/step {out['syncs_per_step']}")
        print(f"{name:20s} {scenario:6s} {shown}", flush=True)


def _count_syncs(name: str, scenario: str, bench: dict[str, Any], data_dir: str, steps: int) -> tuple[int, int]:
    """(host synchronisations torch warned about, optimiser steps) in a short CUDA run of ``steps`` per task."""
    config = {**short_config(name), **({"iterations": steps} if "iterations" in short_config(name) else {})}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            runner.run(name, "split-mnist", scenario=scenario, seed=0, config=config, bench_options=bench,
                       data_root=data_dir, device="cuda", quiet=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return syncs, steps * bench["n_tasks"]


def syncs_per_step(name: str, scenario: str, bench: dict[str, Any], data_dir: str) -> float | None:
    """Extra syncs per extra step between a 30- and a 60-step run (None for methods budgeted in epochs)."""
    if "iterations" not in short_config(name):
        return None
    (a, n_a), (b, n_b) = (_count_syncs(name, scenario, bench, data_dir, s) for s in (30, 60))
    return (b - a) / (n_b - n_a)


def step_speed(report: dict[str, Any], save) -> None:
    """Steps/s of a plain PyTorch MLP step and of forgetless's fine-tuning step (same MLP, batch, device)."""
    device = torch.device("cuda")
    x = torch.rand(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 400), torch.nn.ReLU(),
                              torch.nn.Linear(400, 400), torch.nn.ReLU(), torch.nn.Linear(400, 10)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def plain(n: int) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    plain(50)
    plain_rate = plain(500)
    # forgetless: a whole finetune run's steady-state tasks, steps/s from its per-task times
    iterations = 500
    result = runner.run("finetune", "split-mnist", scenario="class", seed=0,
                        config={"iterations": iterations, "batch_size": 128},
                        bench_options={"n_tasks": 3, "train_per_class": 1000, "test_per_class": 100},
                        device="cuda", quiet=True)
    ours = iterations / min(result["time"]["per_task_seconds"][1:])
    report["steps_per_second"] = {"plain_pytorch": plain_rate, "forgetless_finetune": ours,
                                  "ratio_plain_over_ours": plain_rate / ours, "gpu": torch.cuda.get_device_name(0)}
    save()
    print(f"steps/s: plain {plain_rate:.0f}, forgetless finetune {ours:.0f} (plain/ours {plain_rate / ours:.2f})",
          flush=True)


def paper_rows(data_dir: str, out: Path, deadline: float, report: dict[str, Any], save) -> None:
    rows = report.setdefault("paper_budget", {})
    for config, label in PAPER_ROWS:
        left = deadline - time.monotonic()
        if left < 60:
            rows[f"{config}: {label}"] = {"skipped": "no time left"}
            save()
            continue
        cmd = [sys.executable, "-m", "forgetless", "reproduce", config, "--only", label, "--seeds", "0",
               "--device", "cuda", "--data-dir", data_dir, "--out", str(out / config), "--quiet"]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
            rows[f"{config}: {label}"] = {"command": " ".join(cmd), "seconds": time.monotonic() - t0,
                                          "returncode": proc.returncode, "table": proc.stdout[-4000:],
                                          "stderr": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            rows[f"{config}: {label}"] = {"command": " ".join(cmd), "stopped_at_deadline_s": left,
                                          "resume": "rerun the same command: finished tasks are checkpointed"}
        save()
        print(f"{config} / {label}: {rows[f'{config}: {label}'].get('returncode', 'stopped')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--budget-s", type=float, default=480.0, help="seconds for the paper-budget rows")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--only", help="comma-separated methods for part 1 (default: all)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run this on a GPU machine", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    names = sorted(methods.METHODS) if not args.only else [n.strip() for n in args.only.split(",")]
    compare_devices(args.data_dir, names, report, save)
    step_speed(report, save)
    if not args.skip_paper:
        paper_rows(args.data_dir, args.out, time.monotonic() + args.budget_s, report, save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
