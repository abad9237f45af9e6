"""Many runs (forgetless.sweep): option checks, failed runs reported not fatal, and the Ray backend giving the
local backend's numbers, retrying a dead worker once and skipping finished runs (tiny split-digits runs)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import pytest
import yaml

from forgetless import sweep
from forgetless.cli import main
from forgetless.compare import compare
from forgetless.sweep import RunsFailedError

TINY = {"epochs": 1, "hidden": [16]}
BENCH = {"n_tasks": 2}
CMP = ["compare", "-b", "split-digits", "--bench", "n_tasks=2", "--set", "epochs=1", "--set", "hidden=16", "--quiet"]
# directories whose runs the test-only hook kills (sweep.KILL_ENV): once, or on every attempt (ewc only)
KILL_SPEC = "__kill_once__=once,__kill_always__/ewc=always"
HAVE_RAY = importlib.util.find_spec("ray") is not None


def _compare(out, methods=("finetune", "ewc"), seeds=(0, 1), **kwargs):
    return compare("split-digits", list(methods), list(seeds), out, config=TINY, bench_options=BENCH, plots=False,
                   quiet=True, **kwargs)


def _numbers(summary: dict) -> dict:
    """The summary without wall and CPU times (which differ between any two runs)."""
    timing = ("train_seconds", "train_cpu_seconds")
    return {m: {k: v for k, v in s.items() if k not in timing} for m, s in summary["methods"].items()}


@pytest.mark.parametrize("args,needle", [
    (["--jobs", "0"], "--jobs must be an integer >= 1, got 0"),
    (["--jobs", "-1"], "--jobs must be an integer >= 1, got -1"),
    (["--cpus-per-run", "0"], "--cpus-per-run must be an integer >= 1, got 0"),
    (["--gpus-per-run", "-1"], "--gpus-per-run must be an integer >= 0, got -1"),
    (["--backend", "dask"], "unknown --backend 'dask'; valid: local, ray"),
])
def test_bad_sweep_options_are_one_line_errors(args, needle, capsys, tmp_path):
    code = main([*CMP, "--methods", "finetune", "--out", str(tmp_path / "c"), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "c").exists()  # rejected before any run started


def test_backend_ray_without_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    code = main([*CMP, "--methods", "finetune", "--out", str(tmp_path / "c"), "--backend", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'forgetless[ray]'" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    from forgetless import compare

    # compare refuses a bad key before training (tested in test_cli); here a run must fail while running
    monkeypatch.setattr(compare, "validate", lambda *args, **kwargs: None)
    out = tmp_path / "c"
    with pytest.raises(RunsFailedError) as info:
        _compare(out, seeds=(0,), method_configs={"ewc": {"no_such_key": 1}})
    assert info.value.exit_code == 2 and "1 of 2 runs failed" in str(info.value)  # bad input: exit status 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["finetune"]["n_runs"] == 1 and "failed" not in summary["methods"]["finetune"]
    assert summary["methods"]["ewc"]["n_runs"] == 0
    assert "no_such_key" in summary["methods"]["ewc"]["failed"][0]["error"]
    table = (out / "table.md").read_text()
    assert "| ewc (1 of 1 runs failed) | failed |" in table and "| finetune | " in table
    err = capsys.readouterr().err  # one line per finished run without a terminal
    assert "] finetune seed 0: final accuracy " in err and "] ewc seed 0: FAILED: " in err


# ------------------------------------------------------------------------------------------ Ray

@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (it takes seconds to start); its workers inherit the kill hook."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install 'forgetless[ray]')")
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(sweep.KILL_ENV, KILL_SPEC)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level=logging.WARNING)
        yield ray
        ray.shutdown()


def test_ray_gives_the_local_numbers_and_skips_finished_runs(local_ray, tmp_path, capsys):
    local = _compare(tmp_path / "local")
    on_ray = _compare(tmp_path / "ray", sweep={"backend": "ray"})
    assert _numbers(on_ray) == _numbers(local)
    for run in ("finetune/seed-0", "ewc/seed-1"):
        a, b = (json.loads((tmp_path / d / run / "results.json").read_text()) for d in ("local", "ray"))
        assert a["accuracy"] == b["accuracy"] and a["config"] == b["config"]
    assert "[4/4] " in capsys.readouterr().err
    # a second sweep reuses every finished run: nothing rewritten, nothing submitted
    results = sorted((tmp_path / "ray").glob("*/seed-*/results.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    assert _numbers(_compare(tmp_path / "ray", sweep={"backend": "ray"})) == _numbers(local)
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert capsys.readouterr().err.count("(finished earlier)") == 4


def test_ray_retries_a_dead_worker_once(local_ray, tmp_path):
    out = tmp_path / "__kill_once__"
    summary = _compare(out, methods=("finetune",), seeds=(0,), sweep={"backend": "ray"})
    assert (out / "finetune" / ".seed-0.killed").exists()  # the first attempt did die
    assert summary["methods"]["finetune"]["n_runs"] == 1
    assert json.loads((out / "finetune" / "seed-0" / "results.json").read_text())["complete"]


def test_ray_reports_a_run_that_always_dies_and_finishes_the_others(local_ray, tmp_path):
    out = tmp_path / "__kill_always__"
    with pytest.raises(RunsFailedError) as info:
        _compare(out, seeds=(0,), sweep={"backend": "ray"})
    assert info.value.exit_code == 1  # not bad input
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["finetune"]["n_runs"] == 1
    assert "worker died, retried once" in summary["methods"]["ewc"]["failed"][0]["error"]
    assert "| ewc (1 of 1 runs failed) | failed |" in (out / "table.md").read_text()


def test_reproduce_on_ray_from_the_command_line(local_ray, tmp_path, capsys):
    conf = tmp_path / "table.yaml"
    conf.write_text(yaml.safe_dump({
        "title": "Toy", "seeds": [0],
        "defaults": {"benchmark": "split-digits", "set": TINY, "bench": BENCH},
        "runs": [{"label": "FT", "method": "finetune", "paper": 50.0}],
    }))
    code = main(["reproduce", str(conf), "--out", str(tmp_path / "rep"), "--backend", "ray", "--quiet"])
    assert code == 0
    assert "[1/1] FT seed 0: final accuracy " in capsys.readouterr().err
    assert "| FT | final_accuracy | 50.00 |" in (tmp_path / "rep" / "reproduce.md").read_text()
