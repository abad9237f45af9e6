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
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


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

    cmp_ = sub.add_parser("compare", help="several methods x seeds: table and plots")
    cmp_.add_argument("--methods", required=True, help="comma-separated method names")
    _common(cmp_)
    cmp_.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    cmp_.add_argument("--out", "-o", type=Path, required=True)
    cmp_.add_argument("--jobs", "-j", type=int, default=1, help="runs in parallel processes")

    rep = sub.add_parser("reproduce", help="run a published table and show ours beside the paper's")
    rep.add_argument("config", help="a YAML path or the name of a file in configs/")
    rep.add_argument("--out", "-o", type=Path)
    rep.add_argument("--seeds", help="override the config's seeds, e.g. 0 or 0,1,2")
    rep.add_argument("--only", help="run only rows whose label contains this text (an exact label: that row alone)")
    rep.add_argument("--set", dest="set_", action="append", metavar="KEY=VALUE", help="override for every row")
    rep.add_argument("--bench", action="append", metavar="KEY=VALUE", help="benchmark override for every row")
    rep.add_argument("--data-dir")
    rep.add_argument("--device", default="auto")
    rep.add_argument("--jobs", "-j", type=int, default=1)
    rep.add_argument("--dry-run", action="store_true", help="print the commands only")
    rep.add_argument("--collect", action="store_true",
                     help="train nothing: tabulate the runs already finished under --out")
    rep.add_argument("--quiet", "-q", action="store_true")

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


def _overrides(args) -> tuple[dict[str, Any], dict[str, Any]]:
    method, bench = {}, {}
    if getattr(args, "config", None):
        try:
            conf = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {args.config}: {exc}") from None
        if not isinstance(conf, dict) or set(conf) - {"set", "bench"}:
            raise ConfigError(f"--config {args.config}: expected a mapping with keys 'set' and/or 'bench'")
        method.update(conf.get("set") or {})
        bench.update(conf.get("bench") or {})
    method.update(parse_kv(args.set_, "--set"))
    bench.update(parse_kv(args.bench, "--bench"))
    return method, bench


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


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            _list(args.what)
            return 0
        _check_paths(args)
        if args.command == "run":
            from . import runner

            if args.resume and args.overwrite:
                raise ConfigError("--resume and --overwrite exclude each other; valid: one of them")
            runner.check_seed(args.seed)
            method_cfg, bench_cfg = _overrides(args)
            out = args.out or Path("runs") / f"{args.method}-{args.benchmark}-{args.scenario}-s{args.seed}"
            result = runner.run(args.method, args.benchmark, scenario=args.scenario, seed=args.seed,
                                config=method_cfg, bench_options=bench_cfg, out=out, resume=args.resume,
                                overwrite=args.overwrite, device=args.device, data_root=args.data_dir,
                                evaluate_future=args.eval_future, keep_checkpoints=args.keep_checkpoints,
                                quiet=args.quiet)
            _print_result(result, out)
            return 0
        if args.command == "compare":
            from .compare import compare

            method_cfg, bench_cfg = _overrides(args)
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
            if len(set(methods)) != len(methods):
                raise ConfigError(f"--methods lists a method twice: {args.methods!r}; valid: distinct names")
            compare(args.benchmark, methods, _seeds(args.seeds), args.out, scenario=args.scenario, config=method_cfg,
                    bench_options=bench_cfg, workers=args.jobs, overwrite=args.overwrite, device=args.device,
                    data_root=args.data_dir, quiet=args.quiet)
            print(f"written: {args.out}/table.md, summary.json, accuracy_matrices.png, accuracy_curves.png")
            return 0
        if args.command == "reproduce":
            from .reproduce import reproduce

            reproduce(args.config, out=args.out, seeds=_seeds(args.seeds) if args.seeds else None, only=args.only,
                      overrides=parse_kv(args.set_, "--set"), bench_overrides=parse_kv(args.bench, "--bench"),
                      dry_run=args.dry_run, collect=args.collect, workers=args.jobs, device=args.device,
                      data_root=args.data_dir,
                      quiet=args.quiet)
            return 0
    except ForgetlessError as exc:
        # one line even when the message quotes a multi-line parser error (YAML's point at the bad column)
        print("forgetless: error: " + " ".join(line.strip() for line in str(exc).splitlines() if line.strip()),
              file=sys.stderr)
        return EXIT_DIVERGED if isinstance(exc, DivergedError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("forgetless: interrupted (finished tasks are checkpointed; rerun with --resume)", file=sys.stderr)
        return 130
    return 0


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
