"""Many runs at once: the one place that runs the jobs of ``compare`` and ``reproduce``.

A job is the keyword arguments of :func:`runner.run` and a run is a pure function of them, so where it runs
does not change its numbers. Backends:

- ``local``: in this process (``workers`` 1) or in ``workers`` spawned processes;
- ``ray``: one Ray task per run on a local Ray started here, or on a running cluster (``address``), with
  ``num_cpus``/``num_gpus`` per run. A task whose worker dies is retried once.

Either way a run that fails is returned as a failure record (see :func:`failure`) and every other run still
finishes, so the table can say which cells failed instead of losing all of them. Finished runs are reused on
the driver without submitting anything.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from . import fileio, runner
from .errors import ConfigError, DivergedError, ForgetlessError, choices

BACKENDS = ("local", "ray")
RAY_MISSING = "--backend ray needs Ray, which is not installed: pip install 'forgetless[ray]'"
# Test-only hook: "PATTERN=once,PATTERN2=always" makes a run whose --out contains PATTERN kill its worker
# process (os._exit) on its first attempt only (a marker file remembers it) or on every attempt.
KILL_ENV = "FORGETLESS_TEST_KILL"


class RunsFailedError(ForgetlessError):
    """Some runs of a sweep failed; the others finished and the table/summary were written.
    ``exit_code`` is 2 when every failure is bad input (a ForgetlessError), else 1."""

    def __init__(self, failures: list[dict[str, Any]], total: int):
        self.failures, self.total = failures, total
        self.exit_code = 2 if all(f.get("user_error") for f in failures) else 1
        first = failures[0]
        super().__init__(f"{len(failures)} of {total} runs failed (the others are tabulated; rerun to retry); "
                         f"{first['label']}: {first['error']}")


# ------------------------------------------------------------------------------------------ running one

def finished_run(out: str | Path) -> dict[str, Any] | None:
    """The results of the finished run in ``out``, or None (absent or partial)."""
    path = Path(out) / "results.json"
    if not path.exists():
        return None
    result = fileio.read_json(path)
    return result if result.get("complete") else None


def _run_one(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Reuse a finished run made with the same settings, resume a partial one, else start it (unless
    ``overwrite``). This is ``forgetless run``'s code path, whatever the backend. A diverged run gives its
    partial results, marked ``"diverged"`` (shown in the table, not averaged).

    Reuse reads results.json without the run's lock: it is written atomically, and a run still in progress
    is not complete, so it goes on to runner.run, which takes the lock (and is refused if the run is alive
    elsewhere)."""
    try:
        return _train_or_reuse(kwargs)
    except DivergedError as err:
        path = Path(kwargs["out"]) / "results.json"
        partial = fileio.read_json(path) if path.exists() else {}
        return {**partial, "diverged": err.marker(), "complete": False}


def _train_or_reuse(kwargs: dict[str, Any]) -> dict[str, Any]:
    if not kwargs.get("overwrite"):
        if (existing := finished_run(kwargs["out"])) is not None:
            try:
                runner.check_same_run(existing, **kwargs)
            except ConfigError as err:
                raise ConfigError(f"{kwargs['out']}: {err}") from None
            return existing
        if (Path(kwargs["out"]) / "results.json").exists():
            kwargs = {**kwargs, "resume": True}
    return runner.run(**kwargs)


def _maybe_kill_for_test(out: str | Path) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    out = Path(out)
    for item in spec.split(","):
        pattern, _, mode = item.partition("=")
        if pattern and pattern in str(out):
            marker = out.parent / f".{out.name}.killed"
            if mode == "always" or not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                os._exit(1)


def failure(job: dict[str, Any], label: str, error: str, user_error: bool) -> dict[str, Any]:
    """The record of a failed run, in place of its results: ``failed`` is True, ``error`` the reason (one
    line); ``user_error`` whether it was bad input (not retried, exit status 2)."""
    return {"failed": True, "label": label, "method": str(job.get("method")), "seed": job.get("seed"),
            "out": str(job.get("out")), "error": error, "user_error": user_error}


def is_failure(result: dict[str, Any] | None) -> bool:
    return bool(result) and result.get("failed") is True


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    return text if isinstance(exc, ForgetlessError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _ray_task(kwargs: dict[str, Any], threads: int) -> tuple[bool, Any]:
    """A Ray task: as many torch threads as the CPUs it asked Ray for."""
    _set_threads(threads)
    return _task(kwargs)


def _task(kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """What each worker runs: ``(True, results)``, or ``(False, (reason, user_error))`` for an exception.
    Exceptions come back as values, so Ray retries only a worker that died, never a run that raised."""
    _maybe_kill_for_test(kwargs["out"])
    try:
        return True, _run_one(kwargs)
    except Exception as exc:
        return False, (_reason(exc), isinstance(exc, ForgetlessError))


# ------------------------------------------------------------------------------------------ options

def check_options(workers: int = 1, backend: str = "local", cpus_per_run: int = 1,
                  gpus_per_run: int | None = None) -> None:
    """One-line ConfigErrors for out-of-range sweep options (before anything starts)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown --backend {backend!r}; valid: {choices(BACKENDS)}")
    for flag, value, low in (("--jobs", workers, 1), ("--cpus-per-run", cpus_per_run, 1),
                             ("--gpus-per-run", gpus_per_run, 0)):
        if value is None and flag == "--gpus-per-run":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")


def import_ray():
    """The ray module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _label(job: dict[str, Any]) -> str:
    return f"{job.get('method')} seed {job.get('seed')}"


# ------------------------------------------------------------------------------------------ progress

class _Progress:
    """Runs done / total on stderr: a tqdm bar (with ETA) on a terminal, else (or with ``quiet``) one line
    per finished run, e.g. ``[3/8] ewc seed 1: final accuracy 81.20 % (12.3 s)``."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.done = total, 0
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)

    def finished(self, label: str, result: dict[str, Any], reused: bool = False) -> None:
        self.done += 1
        if is_failure(result):
            what = f"FAILED: {result['error']}"
        elif result.get("diverged"):
            what = "diverged at task {task}, step {step} ({name}={value})".format(**result["diverged"])
        elif result.get("metric") == "mse" and result.get("final_mse") is not None:
            what = f"final MSE {result['final_mse']:.5f}"
        elif result.get("final_accuracy") is not None:
            what = f"final accuracy {100 * result['final_accuracy']:.2f} %"
        else:
            what = "done"
        if not is_failure(result):
            seconds = sum((result.get("time") or {}).get(k, 0.0) for k in ("train_seconds", "eval_seconds"))
            what += " (finished earlier)" if reused else f" ({seconds:.1f} s)"
        line = f"[{self.done}/{self.total}] {label}: {what}"
        if self.bar is not None:
            if is_failure(result):
                self.bar.write(line, file=sys.stderr)
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------ backends

def run_many(jobs: list[dict[str, Any]], workers: int = 1, *, backend: str = "local", address: str | None = None,
             cpus_per_run: int = 1, gpus_per_run: int | None = None, labels: list[str] | None = None,
             quiet: bool | None = None) -> list[dict[str, Any]]:
    """Run each job (keyword arguments of :func:`runner.run`); returns their results in order, a
    :func:`failure` record for each run that failed. ``gpus_per_run`` None: 1 for a job on ``cuda``, else 0."""
    check_options(workers, backend, cpus_per_run, gpus_per_run)
    ray = import_ray() if backend == "ray" else None
    labels = labels or [_label(j) for j in jobs]
    if quiet is None:
        quiet = all(j.get("quiet") for j in jobs)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    progress = _Progress(len(jobs), quiet)
    try:
        pending = []
        for i, job in enumerate(jobs):
            # a finished run is only checked against the settings asked for: no worker needed
            if not job.get("overwrite") and finished_run(job["out"]) is not None:
                results[i] = _local(job, labels[i])
                progress.finished(labels[i], results[i], reused=not is_failure(results[i]))
            else:
                pending.append(i)
        if ray is not None:
            _run_ray(ray, jobs, pending, labels, results, progress, address, cpus_per_run, gpus_per_run, quiet)
        elif workers <= 1 or len(pending) <= 1:
            for i in pending:
                results[i] = _local(jobs[i], labels[i])
                progress.finished(labels[i], results[i])
        else:
            _run_pool(jobs, pending, labels, results, progress, workers)
    finally:
        progress.close()
    return results  # type: ignore[return-value]  # every slot is filled


def _local(job: dict[str, Any], label: str) -> dict[str, Any]:
    ok, value = _task(job)
    return value if ok else failure(job, label, *value)


def _run_pool(jobs, pending, labels, results, progress, workers: int) -> None:
    import multiprocessing

    # each worker gets its share of the cores: N workers x torch's default threads would oversubscribe them,
    # and OpenMP threads that spin against each other make every step crawl
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads,
                             initargs=(threads,)) as pool:
        futures: dict[Future, int] = {pool.submit(_task, jobs[i]): i for i in pending}
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for fut in done:
                i = futures[fut]
                try:
                    ok, value = fut.result()
                    results[i] = value if ok else failure(jobs[i], labels[i], *value)
                except BrokenProcessPool:  # a worker died; the pool cannot tell whose run it was
                    results[i] = failure(jobs[i], labels[i], "a worker process died (local backend: not retried)",
                                         False)
                progress.finished(labels[i], results[i])


def _start_ray(ray, address: str | None, quiet: bool) -> bool:
    """Connect to (``address``) or start a local Ray unless one is already up; True if this call started it."""
    if ray.is_initialized():
        return False
    # a local Ray gets this machine's cores; the dashboard and worker logs only cost startup time and noise
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet, ignore_reinit_error=True,
                 logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:  # e.g. --address auto with no cluster running
        raise ConfigError(f"--address {address or '(local)'}: cannot start or join Ray ({_reason(exc)})") from None
    return True


def _run_ray(ray, jobs, pending, labels, results, progress, address, cpus_per_run, gpus_per_run, quiet) -> None:
    if not pending:
        return
    started = _start_ray(ray, address, quiet)
    try:
        # max_retries: a worker that dies (killed, OOM, lost node) is retried once; exceptions come back as
        # values from _task, so a run that raised is never retried
        remote = ray.remote(max_retries=1, retry_exceptions=False)(_ray_task)
        refs = {}
        for i in pending:
            gpus = gpus_per_run if gpus_per_run is not None else int(str(jobs[i].get("device", "")).startswith("cuda"))
            refs[remote.options(num_cpus=cpus_per_run, num_gpus=gpus).remote(jobs[i], cpus_per_run)] = i
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                i = refs[ref]
                try:
                    ok, value = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died twice (or the task was lost)
                    results[i] = failure(jobs[i], labels[i], f"worker died, retried once: {_reason(exc)}", False)
                else:
                    results[i] = value if ok else failure(jobs[i], labels[i], *value)
                    if ok:
                        _ensure_written(jobs[i], value)
                progress.finished(labels[i], results[i])
    finally:
        if started:
            ray.shutdown()


def _ensure_written(job: dict[str, Any], result: dict[str, Any]) -> None:
    """On a cluster without shared storage the worker's results.json is on its own node: keep a copy here."""
    if job.get("out") is not None and not (Path(job["out"]) / "results.json").exists():
        fileio.write_json(Path(job["out"]) / "results.json", result)


__all__ = ["BACKENDS", "RunsFailedError", "check_options", "failure", "finished_run", "import_ray", "is_failure",
           "run_many"]
