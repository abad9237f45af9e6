"""Drive a method over a benchmark: train task by task, evaluate on every task after each, checkpoint
after each, write ``results.json`` (see DESIGN.md) and ``log.jsonl``.

A run is a pure function of (method, benchmark, scenario, seed, config, data root): every task starts
from a seed derived from (seed, task index), so a run resumed from the checkpoint of task k continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, benchmarks, checkpoint, distributed, fileio, metrics
from . import config as cfg
from .benchmarks.base import Benchmark, BenchmarkInfo, Task
from .errors import ConfigError, ForgetlessError, RunExistsError
from .methods import base as mbase

CHECKPOINT_FORMAT = checkpoint.FORMAT  # 2: the method as a code-free tree (checkpoint.py); 1 was a pickle
EVAL_BATCH = 1000


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_seed(seed: int, task_index: int) -> int:
    return (seed * 1_000_003 + task_index * 7919 + 17) % 2**62


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available; valid here: cpu")
    return device


# ----------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(method: mbase.Method, task: Task, info: BenchmarkInfo, after: int) -> dict[str, float]:
    """Accuracy (or MSE for regression) on ``task``'s test split after learning task ``after``, and the
    task-inference accuracy when the method infers tasks outside task-IL."""
    method.eval()
    split = task.test
    task_id = task.id if info.scenario == "task" else None
    allowed = torch.as_tensor(info.active_labels(task.id if info.scenario == "task" else after))
    correct, sq_err, n, inferred_ok = 0.0, 0.0, 0, 0
    infer = getattr(method, "infer_task", None) if info.scenario != "task" else None
    for x, y in split.batches(EVAL_BATCH):
        out = method.predict(x, task_id=task_id)
        if info.kind == "regression":
            sq_err += float(((out - y) ** 2).reshape(len(y), -1).mean(1).sum())
        else:
            labels = allowed.to(out.device)
            pred = labels[out[:, labels].argmax(1)]
            correct += float((pred == y).sum())
        if infer is not None:
            inferred_ok += int((infer(x) == task.id).sum())
        n += len(y)
    result = {"mse": sq_err / max(n, 1)} if info.kind == "regression" else {"accuracy": correct / max(n, 1)}
    if infer is not None:
        result["task_inference"] = inferred_ok / max(n, 1)
    return result


def measure_macs(method: mbase.Method, bench: Benchmark) -> int | None:
    task = bench.tasks[-1]
    x = task.test.inputs(slice(0, 1))
    task_id = task.id if bench.scenario == "task" else None
    own = getattr(method, "macs_per_sample", None)
    method.eval()
    try:
        if own is not None:
            return own(x, task_id)
        return metrics.count_macs(lambda: method.predict(x, task_id=task_id))
    except ForgetlessError:
        raise
    except Exception:  # counting is best-effort: an exotic op must not lose a finished run
        return None


# --------------------------------------------------------------------------------------------- runs

def _benchmark(benchmark, scenario: str, seed: int, bench_options: dict[str, Any] | None,
               data_root: str | None) -> Benchmark:
    """The run's benchmark, built after seeding as the run seeds it."""
    seed_everything(seed)
    return benchmark if isinstance(benchmark, Benchmark) else benchmarks.build(
        benchmark, scenario, seed, data_root, **(bench_options or {}))


def _build(method, benchmark, scenario: str, seed: int, config: dict[str, Any] | None,
           bench_options: dict[str, Any] | None, data_root: str | None, backbone) -> tuple[Benchmark, str, Any]:
    """The benchmark and the untrained method of a run."""
    bench = _benchmark(benchmark, scenario, seed, bench_options, data_root)
    if isinstance(method, mbase.Method):
        return bench, method.name or type(method).__name__, method
    overrides = dict(config or {})
    if backbone is not None:
        overrides["backbone"] = backbone
    return bench, method, mbase.create(method, bench.info(), **overrides)


def check_same_run(result: dict[str, Any], method, benchmark, *, scenario: str = "class", seed: int = 0,
                   config: dict[str, Any] | None = None, bench_options: dict[str, Any] | None = None,
                   data_root: str | None = None, backbone=None, **_: Any) -> None:
    """Raise ConfigError if the finished run ``result`` was made with other settings than the run requested
    (reusing it would silently tabulate the wrong experiment). Options that one side does not know (added
    to forgetless after the run was made) are not compared."""
    if isinstance(method, str) and (backbone is None or isinstance(backbone, str)):
        # the resolved config is enough: no need to build the network
        bench = _benchmark(benchmark, scenario, seed, bench_options, data_root)
        overrides = {**(config or {}), **({"backbone": backbone} if backbone else {})}
        name, resolved = method, cfg.to_dict(mbase.resolve_config(method, bench.info(), overrides))
    else:
        bench, name, model = _build(method, benchmark, scenario, seed, config, bench_options, data_root, backbone)
        resolved = mbase.config_dict(model)
    want = json.loads(json.dumps(_identity(name, bench, seed, resolved), default=fileio.json_default))
    if diffs := _diff({k: result.get(k) for k in want}, want, shared_only=True):
        raise ConfigError(f"the finished run there was made with other settings ({diffs}); "
                          "move it away (compare: --overwrite) or use another --out")


def _identity(method_name: str, bench: Benchmark, seed: int, config: dict[str, Any]) -> dict[str, Any]:
    return {"method": method_name, "benchmark": bench.name, "scenario": bench.scenario, "seed": seed,
            "config": config, "benchmark_options": bench.options}


def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Returns the checkpoint to resume from (or None); refuses to clobber finished or unfinished runs."""
    results = out / "results.json"
    ckpt_dir = out / "checkpoints"
    found = ckpt_dir.glob("task-*.pt") if ckpt_dir.exists() else []
    checkpoints = sorted(found, key=lambda p: int(p.stem.split("-")[1]))
    if resume or overwrite:  # what a write killed half-way left behind (see fileio._atomic)
        checkpoint.remove_temporaries(out)
    if overwrite:
        for p in checkpoints:
            p.unlink()
        for name in ("results.json", "log.jsonl"):
            (out / name).unlink(missing_ok=True)
        return None
    finished = results.exists() and _read_results(results).get("complete", False)
    if finished and not resume:
        raise RunExistsError(f"{out} already holds a finished run; use --overwrite to replace it or another --out")
    if resume:
        return checkpoints[-1] if checkpoints else None
    if checkpoints or results.exists():
        raise RunExistsError(f"{out} holds an unfinished run; use --resume to continue it or --overwrite to restart")
    return None


def _read_results(path: Path) -> dict[str, Any]:
    """A run directory's results.json; a damaged one is a one-line error saying what to do."""
    try:
        result = fileio.read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        result = exc
    if not isinstance(result, dict):
        why = f"not valid JSON ({result})" if isinstance(result, Exception) else "not a JSON object"
        raise ForgetlessError(f"{path} is damaged: {why}; delete it and rerun with --resume to continue from "
                              "the last checkpoint, or use --overwrite to start again")
    return result


def run(
    method: str | mbase.Method,
    benchmark: str | Benchmark,
    *,
    scenario: str = "class",
    seed: int = 0,
    config: dict[str, Any] | None = None,
    bench_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    data_root: str | None = None,
    backbone: mbase.BackboneFactory | None = None,
    evaluate_future: bool = False,
    keep_checkpoints: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``method`` on ``benchmark`` and return the results dictionary (also written to ``out``).

    ``method``/``benchmark`` are registry names (built with ``config``/``bench_options``) or ready
    objects. With ``out`` set, results, the log and a checkpoint after every task are written there.
    """
    device = distributed.init(resolve_device(device))  # torchrun: join the group, this rank's device
    rank = distributed.rank()
    quiet = quiet or rank != 0  # only rank 0 prints and writes
    bench, method_name, model = _build(method, benchmark, scenario, seed, config, bench_options, data_root, backbone)
    distributed.check_method(method_name, model)
    info = bench.info()
    identity = _identity(method_name, bench, seed, mbase.config_dict(model))
    progress = not quiet and sys.stderr.isatty()

    out_dir = Path(out) if out is not None else None
    rows: list[list[float]] = []
    reference: list[float] = []
    inference_rows: list[list[float]] = []
    per_task: list[float] = []
    eval_seconds = 0.0
    start = 0
    if out_dir is not None:
        # rank 0 decides (and cleans up); every rank then loads the same checkpoint
        ckpt = distributed.broadcast_object(_check_out_dir(out_dir, resume, overwrite) if rank == 0 else None)
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            state = checkpoint.read(ckpt, template=model)  # never unpickles code: see checkpoint.py
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ForgetlessError(f"{ckpt}: checkpoint format {state.get('format')} is not supported")
            if not _same_run(state["identity"], identity, mbase.default_config_dict(model)):
                raise ConfigError(f"{ckpt} was written by a different run ({_diff(state['identity'], identity)}); "
                                  f"resume with the same options or use --overwrite")
            model = state["method"]
            rows, inference_rows = state["accuracy"], state["task_inference"]
            reference = state.get("reference", [])
            per_task, eval_seconds, start = state["per_task_seconds"], state["eval_seconds"], state["task_index"] + 1
            if not quiet:
                print(f"resuming {out_dir} after task {start}/{len(bench)}", file=sys.stderr)
    model.to(device)
    log_file = open(out_dir / "log.jsonl", "a") if out_dir is not None and rank == 0 else None  # noqa: SIM115
    metric = "mse" if info.kind == "regression" else "accuracy"
    if evaluate_future and start == 0 and not reference:
        # FWT's reference b_j: every task evaluated by the model before it has learned anything.
        seed_everything(task_seed(seed, -1))
        reference = [evaluate(model, t.to(device), info, 0)[metric] for t in bench.tasks]
    try:
        for i in range(start, len(bench)):
            task = bench.tasks[i]
            seed_everything(task_seed(seed, i))
            ctx = mbase.Context(device=device, generator=torch.Generator().manual_seed(task_seed(seed, i)),
                                task_index=i, n_tasks=len(bench), progress=progress,
                                out_dir=out_dir if rank == 0 else None, rank=rank,
                                world_size=distributed.world_size(), _log_file=log_file)
            t0 = time.perf_counter()
            model.train()
            model.learn(task.to(device), ctx)
            distributed.task_boundary(model, i)
            per_task.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            upto = len(bench) if evaluate_future else i + 1
            results = [evaluate(model, bench.tasks[j].to(device), info, i) for j in range(upto)]
            eval_seconds += time.perf_counter() - t0
            rows.append([r[metric] for r in results])
            if "task_inference" in results[0]:
                inference_rows.append([r["task_inference"] for r in results])
            ctx.log(event="evaluation", **{metric: rows[-1]})
            if not quiet:
                shown = " ".join(f"{v:.4f}" for v in rows[-1])
                print(f"[{method_name}] task {i + 1}/{len(bench)} ({per_task[-1]:.1f}s) {metric}: {shown}",
                      file=sys.stderr)
            if out_dir is not None and rank == 0:
                _checkpoint(out_dir, i, model, identity, rows, inference_rows, reference, per_task, eval_seconds,
                            keep_checkpoints)
                fileio.write_json(out_dir / "results.json", _results(identity, bench, rows, inference_rows, reference,
                                                                   per_task, eval_seconds, model, None, complete=False))
    finally:
        if log_file is not None:
            log_file.close()
    macs = measure_macs(model, bench)
    result = _results(identity, bench, rows, inference_rows, reference, per_task, eval_seconds, model, macs,
                      complete=True)
    if out_dir is not None and rank == 0:
        fileio.write_json(out_dir / "results.json", result)
    return result


def _same_run(saved: dict, current: dict, defaults: dict) -> bool:
    """Whether a checkpoint's identity is this run's. An option added to the method after the checkpoint was
    written is absent from its identity; left at its default it is not a new choice, so it does not count."""
    saved_config = saved.get("config") or {}
    config = {k: v for k, v in (current.get("config") or {}).items()
              if k in saved_config or k not in defaults or v != defaults[k]}
    return saved == {**current, "config": config}


def _diff(a: dict, b: dict, shared_only: bool = False) -> str:
    """``key: a vs b`` for each difference, one level into nested dicts (``config.lr``); ``shared_only``:
    nested keys missing on one side are not differences."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys = set(x) & set(y) if shared_only else set(x) | set(y)
            out += [f"{k}.{kk}: {x.get(kk)!r} vs {y.get(kk)!r}" for kk in sorted(keys) if x.get(kk) != y.get(kk)]
        elif x != y:
            out.append(f"{k}: {x!r} vs {y!r}")
    return ", ".join(out)[:300]


def _checkpoint(out_dir, i, model, identity, rows, inference_rows, reference, per_task, eval_seconds,
                keep_all) -> None:
    ckpt_dir = out_dir / "checkpoints"
    path = ckpt_dir / f"task-{i + 1}.pt"
    fileio.save_torch(path, {
        "format": CHECKPOINT_FORMAT, "task_index": i, "identity": identity,
        "method": checkpoint.encode(model), "accuracy": rows,
        "task_inference": inference_rows, "reference": reference, "per_task_seconds": per_task,
        "eval_seconds": eval_seconds,
    })
    if not keep_all:  # the latest checkpoint is enough to resume; older ones only cost disk
        for old in ckpt_dir.glob("task-*.pt"):
            if old != path:
                old.unlink()


def _results(identity, bench: Benchmark, rows, inference_rows, reference, per_task, eval_seconds, model, macs,
             complete: bool) -> dict[str, Any]:
    regression = bench.kind == "regression"
    lower = [row[: i + 1] for i, row in enumerate(rows)]
    summary = metrics.summary(lower) if rows else {}
    result: dict[str, Any] = {
        **{k: identity[k] for k in ("method", "benchmark", "scenario", "seed", "config")},
        "benchmark_options": identity["benchmark_options"],
        "tasks": [{"id": t.id, "classes": t.classes, "labels": t.labels, "name": t.name} for t in bench.tasks],
        "metric": "mse" if regression else "accuracy",
        "accuracy": None if regression else rows,
        "final_accuracy": None if regression else summary.get("final_accuracy"),
        "average_incremental_accuracy": None if regression else summary.get("average_incremental_accuracy"),
        "forgetting": None if regression else summary.get("forgetting"),
        "bwt": None if regression else summary.get("bwt"),
        # forward transfer against the untrained model (only with evaluate_future / --eval-future)
        "fwt": (metrics.fwt(rows, reference) if reference and not regression and len(rows) > 1
                and all(len(r) == len(bench) for r in rows) else None),
        "reference_accuracy": reference or None,
        "task_inference_accuracy": (sum(inference_rows[-1][: len(rows)]) / len(rows)
                                    if inference_rows and rows else None),
        "task_inference": inference_rows or None,
        "storage": model.storage(),
        "macs_per_sample": macs,
        "time": {"train_seconds": sum(per_task), "per_task_seconds": per_task, "eval_seconds": eval_seconds},
        "versions": {"forgetless": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "complete": complete,
        "world_size": distributed.world_size(),  # processes the run trained on (data-parallel when > 1)
    }
    if regression:
        result["mse"] = rows
        result["final_mse"] = sum(rows[-1][: len(rows)]) / len(rows) if rows else None
    report = getattr(model, "report", None)
    if callable(report):
        result["report"] = report()
    return result
