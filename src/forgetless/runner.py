"""Drive a method over a benchmark: train task by task, evaluate on every task after each, checkpoint
after each, write ``results.json`` (see DESIGN.md) and ``log.jsonl``.

A run is a pure function of (method, benchmark, scenario, seed, config, data root): every task starts
from a seed derived from (seed, task index), so a run resumed from the checkpoint of task k continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import (
    __version__,
    benchmarks,
    checkpoint,
    data,
    distributed,
    fileio,
    loggers,
    metrics,
    precision,
    provenance,
    rundir,
)
from . import config as cfg
from .benchmarks.base import Benchmark, BenchmarkInfo, Task
from .errors import ConfigError, DivergedError, ForgetlessError, RunExistsError, choices
from .methods import base as mbase
from .training.divergence import check_parameters

CHECKPOINT_FORMAT = checkpoint.FORMAT  # 2: the method as a code-free tree (checkpoint.py); 1 was a pickle
EVAL_BATCH = 1000


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_seed(seed: int, task_index: int) -> int:
    return (seed * 1_000_003 + task_index * 7919 + 17) % 2**62


def task_generator(seed: int, task_index: int) -> torch.Generator:
    """Seed the global streams for task ``task_index`` of a run and return the task's own generator
    (``Context.generator``): what makes a resumed or re-run task (``forgetless.rerun``) equal the original."""
    seed_everything(task_seed(seed, task_index))
    return torch.Generator().manual_seed(task_seed(seed, task_index))


DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str | torch.device | None) -> None:
    """Refuse a device string other than auto, cpu, cuda, cuda:N (torch's own error is a traceback)."""
    if isinstance(device, str) and not DEVICE_SYNTAX.fullmatch(device):
        raise ConfigError(f"--device {device!r} is not valid; valid: auto, cpu, cuda, cuda:N")


_WARM = False


def warm_up() -> None:
    """Pay torch's one-off lazy imports (the first optimiser step costs ~2 CPU-s) before any timing starts, so
    the first task of every process is not charged for them."""
    global _WARM
    if _WARM:
        return
    p = torch.nn.Parameter(torch.zeros(2))
    for opt in (torch.optim.Adam([p], lr=0.0), torch.optim.SGD([p], lr=0.0, momentum=0.9)):
        p.sum().backward()
        opt.step()
        opt.zero_grad()
    _WARM = True


def resolve_device(device: str | torch.device | None) -> torch.device:
    check_device(device)
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available; valid here: cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device} does not exist; valid here: cpu, cuda, "
                          f"cuda:0..{torch.cuda.device_count() - 1}")
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


def _probe(method: mbase.Method, bench: Benchmark, info: BenchmarkInfo, after: int, device: torch.device):
    """``Context.probe`` for task ``after``: accuracy on the val or test split of tasks 0..after (the first
    ``per_class`` samples of each class when given), the runner's own evaluation; for diagnostics only."""
    cache: dict[tuple[str, int | None], list[Task]] = {}

    def probe(split: str, per_class: int | None = None) -> list[float]:
        if split not in ("val", "test"):
            raise ValueError(f"probe split must be val or test, got {split!r}")
        key = (split, per_class)
        if key not in cache:
            tasks = []
            for task in bench.tasks[: after + 1]:
                part = getattr(task, split)
                if per_class is not None:
                    keep = torch.cat([torch.nonzero(part.y == c).flatten()[:per_class] for c in part.y.unique()])
                    part = part.subset(torch.sort(keep).values)
                tasks.append(dataclasses.replace(task, test=part).to(device))
            cache[key] = tasks
        return [evaluate(method, t, info, after)["accuracy"] for t in cache[key]]

    return probe


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


def check_options(method: str, benchmark: str, scenario: str, config: dict[str, Any] | None = None,
                  bench_options: dict[str, Any] | None = None, amp: str = "none") -> None:
    """Refuse a run whose method, benchmark, scenario or --set / --bench keys and values are invalid, without
    loading data or building a network (compare and reproduce check every run before starting any). Defaults a
    method derives from the benchmark are not applied here: they come from the code, keys and types are what
    the user wrote."""
    from .benchmarks.base import check_scenario

    check_scenario(scenario)
    if method not in mbase.METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {choices(mbase.METHODS)}")
    spec = benchmarks.BENCHMARKS.get(benchmark)
    if spec is None:
        raise ConfigError(f"unknown benchmark {benchmark!r}; valid: {choices(benchmarks.BENCHMARKS)}")
    if scenario not in spec.scenarios:
        raise ConfigError(f"benchmark {benchmark!r} does not support scenario {scenario!r}")
    cls = mbase.METHODS[method].cls
    if scenario not in cls.scenarios:
        raise ConfigError(f"method {method!r} does not support the {scenario} scenario; valid: "
                          f"{choices(cls.scenarios)}")
    cfg.build(spec.options, bench_options or {}, what="--bench key", owner=benchmark)
    precision.check(amp, method, cfg.build(cls.Config, config or {}, what="--set key", owner=method))


def check_same_run(result: dict[str, Any], method, benchmark, *, scenario: str = "class", seed: int = 0,
                   config: dict[str, Any] | None = None, bench_options: dict[str, Any] | None = None,
                   data_root: str | None = None, backbone=None, amp: str = "none", **_: Any) -> None:
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
    want = json.loads(json.dumps(_identity(name, bench, seed, resolved, amp), default=fileio.json_default))
    have = {k: result.get(k) for k in want} | {"amp": result.get("amp", "none")}
    if diffs := _diff(have, {**want, "amp": amp}, shared_only=True):
        raise ConfigError(f"the finished run there was made with other settings ({diffs}); "
                          "move it away (compare: --overwrite) or use another --out")


def _identity(method_name: str, bench: Benchmark, seed: int, config: dict[str, Any],
              amp: str = "none") -> dict[str, Any]:
    # "amp" only when it is not the default, so runs and checkpoints made before the option stay the same run
    return {"method": method_name, "benchmark": bench.name, "scenario": bench.scenario, "seed": seed,
            "config": config, "benchmark_options": bench.options, **({"amp": amp} if amp != "none" else {})}


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
    log: str | Sequence[str] | None = None,
    log_every: int = 50,
    heartbeat_seconds: float = 30.0,
    release_data: bool = False,
    amp: str = "none",
) -> dict[str, Any]:
    """Run ``method`` on ``benchmark`` and return the results dictionary (also written to ``out``).

    ``method``/``benchmark`` are registry names (built with ``config``/``bench_options``) or ready
    objects. With ``out`` set, results, the log and a checkpoint after every task are written there, under
    an exclusive lock on ``out`` (a second run into it is refused). A run whose loss or parameters stop
    being finite raises :class:`DivergedError` (results.json then says ``"diverged"``).
    ``log``: extra logging backends (``csv``, ``tensorboard``, ``wandb``; see :mod:`forgetless.loggers`), fed
    every ``log_every`` steps; when stderr is not a terminal (and not ``quiet``) a heartbeat line is printed
    every ``heartbeat_seconds``. ``amp``: ``"bf16"`` trains and evaluates under bfloat16 autocast
    (:mod:`forgetless.precision`; methods that are not safe with it refuse).
    """
    check_seed(seed)
    precision.check(amp, method if isinstance(method, str) else "", config=None)
    backends = loggers.parse(log)
    if log_every < 1 or not heartbeat_seconds > 0:
        raise ConfigError(f"--log-every must be >= 1 (got {log_every}) and the heartbeat interval > 0")
    device = distributed.init(resolve_device(device))  # torchrun: join the group, this rank's device
    rank = distributed.rank()
    quiet = quiet or rank != 0  # only rank 0 prints and writes
    warm_up()
    bench, method_name, model = _build(method, benchmark, scenario, seed, config, bench_options, data_root, backbone)
    if release_data:  # one run per process (the CLI): the decoded dataset is not needed once the tasks exist
        data.clear_cache()
    distributed.check_method(method_name, model)
    precision.check(amp, method_name, getattr(model, "config", None), device)
    out_dir = None if out is None else Path(out)
    if out_dir is None or rank != 0:  # the run directory is rank 0's: it alone locks and writes it
        return _run(bench, method_name, model, device, seed, out_dir, resume, overwrite, evaluate_future,
                    keep_checkpoints, quiet, backends, log_every, heartbeat_seconds, data_root, amp)
    with rundir.locked(out_dir):  # taken after the options are known good: a typo leaves no directory
        return _run(bench, method_name, model, device, seed, out_dir, resume, overwrite, evaluate_future,
                    keep_checkpoints, quiet, backends, log_every, heartbeat_seconds, data_root, amp)


def _run(bench: Benchmark, method_name: str, model: mbase.Method, device: torch.device, seed: int,
         out_dir: Path | None, resume: bool, overwrite: bool, evaluate_future: bool, keep_checkpoints: bool,
         quiet: bool, backends: Sequence[str] = (), log_every: int = 50, heartbeat_seconds: float = 30.0,
         data_root: str | None = None, amp: str = "none") -> dict[str, Any]:
    rank = distributed.rank()
    info = bench.info()
    identity = _identity(method_name, bench, seed, mbase.config_dict(model), amp)
    progress = not quiet and sys.stderr.isatty()

    rows: list[list[float]] = []
    reference: list[float] = []
    inference_rows: list[list[float]] = []
    per_task: list[float] = []
    per_task_cpu: list[float] = []
    eval_seconds = 0.0
    start = 0
    if out_dir is not None:
        # rank 0 decides (and cleans up); every rank then loads the same checkpoint
        ckpt = distributed.broadcast_object(_check_out_dir(out_dir, resume, overwrite) if rank == 0 else None)
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
            per_task_cpu = state.get("per_task_cpu_seconds", [])
            if not quiet:
                print(f"resuming {out_dir} after task {start}/{len(bench)}", file=sys.stderr)
    model.to(device)
    origin = provenance.collect(device, data_root)
    log_file = open(out_dir / "log.jsonl", "a") if out_dir is not None and rank == 0 else None  # noqa: SIM115
    sinks = loggers.create(backends, out_dir, identity) if rank == 0 else []
    heartbeat = (loggers.Heartbeat(heartbeat_seconds, label=f"[{method_name} seed {seed}] ")
                 if not quiet and not sys.stderr.isatty() else None)
    metric = "mse" if info.kind == "regression" else "accuracy"
    if evaluate_future and start == 0 and not reference:
        # FWT's reference b_j: every task evaluated by the model before it has learned anything.
        seed_everything(task_seed(seed, -1))
        with precision.autocast(device, amp):
            reference = [evaluate(model, t.to(device), info, 0)[metric] for t in bench.tasks]
    try:
        for i in range(start, len(bench)):
            task = bench.tasks[i]
            ctx = mbase.Context(device=device, generator=task_generator(seed, i),
                                task_index=i, n_tasks=len(bench), progress=progress,
                                out_dir=out_dir if rank == 0 else None, rank=rank,
                                world_size=distributed.world_size(), log_every=log_every, _log_file=log_file,
                                loggers=sinks, heartbeat=heartbeat,
                                probe=(_probe(model, bench, info, i, device) if info.kind != "regression" else None))
            t0, c0 = time.perf_counter(), time.process_time()
            model.train()
            try:
                with precision.autocast(device, amp):
                    model.learn(task.to(device), ctx)
            except RuntimeError as exc:  # torch's own overflow check (e.g. Adam's step size at lr=1e38)
                if "overflow" not in str(exc):
                    raise
                raise DivergedError(f"diverged at task {i + 1} (a value overflowed: {exc})", task=i + 1, step=None,
                                    name="overflow", value=math.inf) from None
            distributed.task_boundary(model, i)
            check_parameters(model, i)  # one host read per task; the loss was checked at every log point
            per_task.append(time.perf_counter() - t0)
            per_task_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            upto = len(bench) if evaluate_future else i + 1
            with precision.autocast(device, amp):
                results = [evaluate(model, bench.tasks[j].to(device), info, i) for j in range(upto)]
            eval_seconds += time.perf_counter() - t0
            rows.append([r[metric] for r in results])
            if "task_inference" in results[0]:
                inference_rows.append([r["task_inference"] for r in results])
            ctx.log(event="evaluation", **{metric: rows[-1]})
            if not quiet:
                shown = " ".join(f"{v:.4f}" for v in rows[-1])
                print(f"[{method_name} seed {seed}] task {i + 1}/{len(bench)} ({per_task[-1]:.1f}s, "
                      f"{per_task_cpu[-1]:.1f} CPU-s) {metric}: {shown}",
                      file=sys.stderr)
            if out_dir is not None and rank == 0:
                _checkpoint(out_dir, i, model, identity, rows, inference_rows, reference, per_task, eval_seconds,
                            keep_checkpoints, per_task_cpu=per_task_cpu)
                fileio.write_json(out_dir / "results.json", _results(identity, bench, rows, inference_rows, reference,
                                                                   per_task, eval_seconds, model, None, complete=False,
                                                                   per_task_cpu=per_task_cpu, origin=origin))
    except DivergedError as err:
        raise _diverged(err, out_dir if rank == 0 else None, log_file, identity, bench, rows, inference_rows,
                        reference, per_task, eval_seconds, model) from None
    finally:
        if log_file is not None:
            log_file.close()
        for sink in sinks:
            sink.close()
    macs = measure_macs(model, bench)
    result = _results(identity, bench, rows, inference_rows, reference, per_task, eval_seconds, model, macs,
                      complete=True, per_task_cpu=per_task_cpu, origin=origin)
    if out_dir is not None and rank == 0:
        fileio.write_json(out_dir / "results.json", result)
    return result


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"--seed {seed!r} is out of range; valid: an integer in 0..2**63-1")


def _diverged(err: DivergedError, out_dir: Path | None, log_file, identity, bench: Benchmark, rows, inference_rows,
              reference, per_task, eval_seconds, model) -> DivergedError:
    """Record the divergence (log.jsonl, results.json: not complete, ``"diverged"``) and the error to raise.
    The tasks finished before it keep their checkpoint, which is not touched here."""
    if out_dir is None:
        return err
    if log_file is not None:
        log_file.write(json.dumps({"task": err.task - 1, "event": "diverged", **err.marker()}) + "\n")
    result = _results(identity, bench, rows, inference_rows, reference, per_task, eval_seconds, model, None,
                      complete=False)
    result["diverged"] = err.marker()
    fileio.write_json(out_dir / "results.json", result)
    kept = f"checkpoints/task-{err.task - 1}.pt is kept" if err.task > 1 else "no task finished"
    return DivergedError(f"{out_dir}: {err}; {kept}, results.json marks the run diverged (try a lower lr or "
                         f"grad_clip)", task=err.task, step=err.step, name=err.name,
                         value=err.value)


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
                keep_all, per_task_cpu=()) -> None:
    ckpt_dir = out_dir / "checkpoints"
    path = ckpt_dir / f"task-{i + 1}.pt"
    fileio.save_torch(path, {
        "format": CHECKPOINT_FORMAT, "task_index": i, "identity": identity,
        "method": checkpoint.encode(model), "accuracy": rows,
        "task_inference": inference_rows, "reference": reference, "per_task_seconds": per_task,
        "eval_seconds": eval_seconds, "per_task_cpu_seconds": list(per_task_cpu),
    })
    if not keep_all:  # the latest checkpoint is enough to resume; older ones only cost disk
        for old in ckpt_dir.glob("task-*.pt"):
            if old != path:
                old.unlink()


def _results(identity, bench: Benchmark, rows, inference_rows, reference, per_task, eval_seconds, model, macs,
             complete: bool, per_task_cpu=(), origin: dict[str, Any] | None = None) -> dict[str, Any]:
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
        # wall and CPU time of learn() per task (after a warm-up, so task 1 pays no one-off imports)
        "time": {"train_seconds": sum(per_task), "per_task_seconds": per_task, "eval_seconds": eval_seconds,
                 "train_cpu_seconds": sum(per_task_cpu), "per_task_cpu_seconds": list(per_task_cpu)},
        "versions": {"forgetless": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "provenance": origin,
        "complete": complete,
        "world_size": distributed.world_size(),  # processes the run trained on (data-parallel when > 1)
        "amp": identity.get("amp", "none"),  # bf16: trained and evaluated under bfloat16 autocast
    }
    if regression:
        result["mse"] = rows
        result["final_mse"] = sum(rows[-1][: len(rows)]) / len(rows) if rows else None
    report = getattr(model, "report", None)
    if callable(report):
        result["report"] = report()
    return result
