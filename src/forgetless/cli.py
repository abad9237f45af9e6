"""The ``forgetless`` command line: run, compare, reproduce, list.

Bad input (unknown method, benchmark, scenario, key or value; missing data; an --out in use by another
run) is one line on stderr and exit status 2; no traceback. A run that diverged (nan/inf loss or
parameters) is one line and exit status 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import parse_kv
from .errors import ConfigError, DivergedError, ForgetlessError

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the whole usage)
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", "-b", required=True, help="benchmark name (see 'forgetless list benchmarks')")
    p.add_argument("--scenario", "-s", default="class", help="task | domain | class (default: class)")
    p.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE", help="method hyperparameter")
    p.add_argument("--bench", action="append", metavar="KEY=VALUE", help="benchmark option")
    p.add_argument("--config", type=Path, help="YAML file with 'set:' and/or 'bench:' mappings (flags win)")
    p.add_argument("--data-dir", help="data root (default: $FORGETLESS_DATA, then ~/.cache/forgetless)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: cuda when available)")
    _amp_flag(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    _log_flags(p)


def _amp_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default="none", help="none | bf16: bfloat16 autocast (methods that are not safe with it "
                                                 "refuse; default: none)")


def _log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", help="extra loggers beside log.jsonl: csv, tensorboard, wandb (comma-separated)")
    p.add_argument("--log-every", type=int, default=50, help="log every N optimiser steps (default: 50)")


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """How compare/reproduce run their runs (see forgetless.sweep)."""
    p.add_argument("--jobs", "-j", type=int, default=1, help="local backend: runs in parallel processes (default 1)")
    p.add_argument("--backend", default="local", help="local | ray (default: local)")
    p.add_argument("--address", help="ray: a running cluster ('auto' or ray://host:port); default: a local Ray")
    p.add_argument("--cpus-per-run", type=int, default=1, help="ray: CPUs each run asks for (default 1)")
    p.add_argument("--gpus-per-run", type=int,
                   help="ray: GPUs each run asks for (default: 1 with --device cuda, else 0)")


def _sweep(args) -> dict[str, Any]:
    from .sweep import check_options, import_ray

    check_options(args.jobs, args.backend, args.cpus_per_run, args.gpus_per_run)
    if args.backend == "ray":
        import_ray()  # a missing Ray is a one-line error before anything runs
    return {"backend": args.backend, "address": args.address, "cpus_per_run": args.cpus_per_run,
            "gpus_per_run": args.gpus_per_run}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="forgetless", description="Continual learning without forgetting.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train one method on one benchmark")
    run.add_argument("--method", "-m", required=True)
    _common(run)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", "-o", type=Path,
                     help="output directory (default: runs/<method>-<benchmark>-<scenario>-s<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--keep-checkpoints", action="store_true", help="keep every task's checkpoint, not only the last")
    run.add_argument("--eval-future", action="store_true", help="also evaluate tasks not yet learned (for FWT)")
    run.add_argument("--help-set", action="store_true", help="list the method's --set keys and exit (forgetless show)")
    run.add_argument("--nproc", type=int, default=1,
                     help="train data-parallel on N local processes (launches torch.distributed.run; default 1)")

    cmp_ = sub.add_parser("compare", help="several methods x seeds: table and plots")
    cmp_.add_argument("--methods", required=True, help="comma-separated method names")
    _common(cmp_)
    cmp_.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    cmp_.add_argument("--out", "-o", type=Path, required=True)
    _sweep_options(cmp_)

    rep = sub.add_parser("reproduce", help="run a published table and show ours beside the paper's")
    rep.add_argument("config", help="a YAML path or a config name (see 'forgetless list configs')")
    rep.add_argument("--out", "-o", type=Path)
    rep.add_argument("--seeds", help="override the config's seeds, e.g. 0 or 0,1,2")
    rep.add_argument("--only", help="run only rows whose label contains this text (an exact label: that row alone)")
    rep.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE", help="override for every row")
    rep.add_argument("--bench", action="append", metavar="KEY=VALUE", help="benchmark override for every row")
    rep.add_argument("--data-dir")
    rep.add_argument("--device", default="auto")
    _amp_flag(rep)
    _sweep_options(rep)
    rep.add_argument("--dry-run", action="store_true", help="print the commands only")
    rep.add_argument("--collect", action="store_true",
                     help="train nothing: tabulate the runs already finished under --out")
    rep.add_argument("--quiet", "-q", action="store_true")
    _log_flags(rep)

    show = sub.add_parser("show", help="every --set key of a method (or --bench key of a benchmark): type, default, "
                                       "valid range, source")
    show.add_argument("name", help="a method or benchmark name (see 'forgetless list')")
    show.add_argument("--benchmark", "-b", help="also show a method's defaults for this benchmark")
    show.add_argument("--scenario", "-s", default="class")
    show.add_argument("--data-dir")

    plot = sub.add_parser("plot", help="PNG plots of finished or running runs: accuracy matrix, accuracy curves, "
                                       "losses")
    plot.add_argument("runs", nargs="+", type=Path, help="run directories (holding results.json)")
    plot.add_argument("--out", "-o", type=Path, help="where to write (default: each run directory)")

    lst = sub.add_parser("list", help="list methods, benchmarks, datasets, scenarios or configs")
    lst.add_argument("what", nargs="?", default="all", choices=["all", "methods", "benchmarks", "datasets",
                                                                 "scenarios", "configs"])
    return parser


def _seeds(text: str) -> list[int]:
    from .runner import check_seed

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):  # a repeated seed would count one run twice
        raise ConfigError(f"--seeds expects distinct comma-separated integers, got {text!r}")
    for seed in seeds:
        check_seed(seed)
    return seeds


def _check_paths(args) -> None:
    """Bad --device, --out or --data-dir values, refused before anything is built or trained."""
    from . import rundir
    from .runner import check_device

    check_device(args.device)
    if args.out is not None:
        rundir.check_out(args.out)
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise ConfigError(f"--data-dir {args.data_dir} is a file; valid: a directory (holding e.g. mnist/)")


def _overrides(args, per_method: bool = False) -> tuple[dict[str, Any], ...]:
    """(--set, --bench) from --config and the flags (flags win); with ``per_method`` also the per-method map
    of ``compare``: YAML ``methods: {replay: {buffer_size: 100}}`` and ``--set replay.buffer_size=100``."""
    method, bench, methods_map = {}, {}, {}
    allowed = {"set", "bench", "methods"} if per_method else {"set", "bench"}
    if getattr(args, "config", None):
        try:
            conf = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {args.config}: {exc}") from None
        if not isinstance(conf, dict) or set(conf) - allowed:
            keys = "'set', 'bench' and/or 'methods'" if per_method else "'set' and/or 'bench'"
            raise ConfigError(f"--config {args.config}: expected a mapping with keys {keys}")
        method.update(conf.get("set") or {})
        bench.update(conf.get("bench") or {})
        for name, values in (conf.get("methods") or {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"--config {args.config}: methods.{name} must be a mapping of --set keys")
            methods_map.setdefault(str(name), {}).update(values)
    for key, value in parse_kv(args.set_, "--set").items():
        name, dot, sub = key.partition(".")
        if per_method and dot:
            methods_map.setdefault(name, {})[sub] = value
        else:
            method[key] = value
    bench.update(parse_kv(args.bench, "--bench"))
    return (method, bench, methods_map) if per_method else (method, bench)


def _list(what: str) -> None:
    from . import benchmarks, data, methods
    from .benchmarks.base import SCENARIOS
    from .reproduce import CONFIG_DIR

    if what in ("all", "methods"):
        print("methods:")
        for name, spec in sorted(methods.METHODS.items()):
            print(f"  {name:22s} {spec.description}")
    if what in ("all", "benchmarks"):
        print("benchmarks:")
        for name, spec in sorted(benchmarks.BENCHMARKS.items()):
            print(f"  {name:22s} {spec.description}")
    if what in ("all", "datasets"):
        print("datasets:")
        for name in sorted(data.DATASETS):
            files = ", ".join(f.name for f in data.FILES[name]) or "bundled with scikit-learn"
            print(f"  {name:22s} {files}")
    if what in ("all", "scenarios"):
        print("scenarios: " + ", ".join(SCENARIOS))
    if what in ("all", "configs"):
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
        print("configs: " + (", ".join(names) or "(none)"))


def _show(name: str, benchmark: str | None, scenario: str, data_dir: str | None) -> None:
    from . import benchmarks, config_help, methods

    if name in methods.METHODS:
        print(config_help.method_help(name, benchmark, scenario, data_dir))
    elif name in benchmarks.BENCHMARKS:
        print(config_help.benchmark_help(name))
    else:
        raise ConfigError(f"unknown method or benchmark {name!r}; valid: methods {', '.join(sorted(methods.METHODS))}; "
                          f"benchmarks {', '.join(sorted(benchmarks.BENCHMARKS))}")


def _plot(runs: list[Path], out: Path | None) -> None:
    import json

    from . import plots

    for run in runs:
        path = run / "results.json"
        try:
            result = json.loads(path.read_text())
            log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()] \
                if (run / "log.jsonl").exists() else []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{run}: not a run directory with a readable results.json ({exc})") from None
        target = out / run.name if out is not None and len(runs) > 1 else out or run
        for written in plots.run_plots(result, log, target):
            print(f"written: {written}")


def _help_set(argv: list[str]) -> bool:
    """``forgetless run -m METHOD [-b BENCH] --help-set``: the method's keys, without the run's required flags."""
    if not argv or argv[0] != "run" or "--help-set" not in argv:
        return False
    pre = _Parser(prog="forgetless run", add_help=False)
    pre.add_argument("--method", "-m", required=True)
    pre.add_argument("--benchmark", "-b")
    pre.add_argument("--scenario", "-s", default="class")
    pre.add_argument("--data-dir")
    known, _ = pre.parse_known_args(argv[1:])
    _show(known.method, known.benchmark, known.scenario, known.data_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if _help_set(argv):
            return 0
        args = build_parser().parse_args(argv)
        if args.command == "list":
            _list(args.what)
            return 0
        if args.command == "plot":
            _plot(args.runs, args.out)
            return 0
        if args.command == "show":
            _show(args.name, args.benchmark, args.scenario, args.data_dir)
            return 0
        _check_paths(args)
        if args.command == "run":
            from . import distributed, runner

            if args.resume and args.overwrite:
                raise ConfigError("--resume and --overwrite exclude each other; valid: one of them")
            runner.check_seed(args.seed)
            if args.nproc != 1:
                return _launch(sys.argv[1:] if argv is None else list(argv), args.nproc)
            method_cfg, bench_cfg = _overrides(args)
            out = args.out or Path("runs") / f"{args.method}-{args.benchmark}-{args.scenario}-s{args.seed}"
            result = runner.run(args.method, args.benchmark, scenario=args.scenario, seed=args.seed,
                                config=method_cfg, bench_options=bench_cfg, out=out, resume=args.resume,
                                overwrite=args.overwrite, device=args.device, data_root=args.data_dir,
                                evaluate_future=args.eval_future, keep_checkpoints=args.keep_checkpoints,
                                quiet=args.quiet, log=args.log, log_every=args.log_every, release_data=True,
                                amp=args.amp)
            if distributed.rank() == 0:
                _print_result(result, out)
            return 0
        if args.command == "compare":
            from .compare import compare

            method_cfg, bench_cfg, per_method = _overrides(args, per_method=True)
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
            if len(set(methods)) != len(methods):
                raise ConfigError(f"--methods lists a method twice: {args.methods!r}; valid: distinct names")
            compare(args.benchmark, methods, _seeds(args.seeds), args.out, scenario=args.scenario, config=method_cfg,
                    bench_options=bench_cfg, method_configs=per_method, workers=args.jobs, sweep=_sweep(args),
                    overwrite=args.overwrite,
                    device=args.device, data_root=args.data_dir, quiet=args.quiet, log=args.log,
                    log_every=args.log_every, amp=args.amp)
            print(f"written: {args.out}/table.md, summary.json, accuracy_matrices.png, accuracy_curves.png")
            return 0
        if args.command == "reproduce":
            from .reproduce import reproduce

            reproduce(args.config, out=args.out, seeds=_seeds(args.seeds) if args.seeds else None, only=args.only,
                      overrides=parse_kv(args.set_, "--set"), bench_overrides=parse_kv(args.bench, "--bench"),
                      dry_run=args.dry_run, collect=args.collect, workers=args.jobs, sweep=_sweep(args),
                      device=args.device, data_root=args.data_dir, quiet=args.quiet, log=args.log,
                      log_every=args.log_every, amp=args.amp)
            return 0
    except ForgetlessError as exc:
        # one line even when the message quotes a multi-line parser error (YAML's point at the bad column)
        print("forgetless: error: " + " ".join(line.strip() for line in str(exc).splitlines() if line.strip()),
              file=sys.stderr)
        if isinstance(exc, DivergedError):
            return EXIT_DIVERGED
        return getattr(exc, "exit_code", EXIT_USAGE)  # RunsFailedError: 1 unless every failure was bad input
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("forgetless: interrupted (finished tasks are checkpointed; rerun with --resume)", file=sys.stderr)
        return 130
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(argv: list[str], nproc: int) -> int:
    """``forgetless run --nproc N ...``: the same command under ``torch.distributed.run`` (what ``torchrun
    --standalone --nproc_per_node N -m forgetless run ...`` does), N processes on this machine."""
    import os
    import subprocess

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--nproc under torchrun: the processes are already launched; drop --nproc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "forgetless", *_without_nproc(argv)]
    return subprocess.run(cmd, check=False).returncode


def _print_result(result: dict[str, Any], out: Path) -> None:
    if result.get("metric") == "mse":
        print(f"final MSE {result['final_mse']:.5f}  ->  {out}/results.json")
        return
    parts = [f"final accuracy {100 * result['final_accuracy']:.2f}%"]
    if result.get("forgetting") is not None:
        parts.append(f"forgetting {100 * result['forgetting']:.2f}%")
    if result.get("task_inference_accuracy") is not None:
        parts.append(f"task inference {100 * result['task_inference_accuracy']:.2f}%")
    print(", ".join(parts) + f"  ->  {out}/results.json")


if __name__ == "__main__":
    sys.exit(main())
