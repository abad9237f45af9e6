"""Bad input and bad luck reach the user as one line: exit status 2 for bad values (naming the option and
what is valid), 3 for a diverged run; never a traceback. Also the run-directory lock and divergence records."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from forgetless import rundir, runner
from forgetless.cli import main
from forgetless.errors import ConfigError, DivergedError
from forgetless.methods.finetune import Finetune
from forgetless.training.divergence import check_logged

TINY = ["--benchmark", "split-digits", "--set", "iterations=2", "--set", "batch_size=16", "--set", "hidden=8",
        "--bench", "n_tasks=2", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("forgetless: error: "), err
    assert "Traceback" not in err


def _run(tmp_path: Path, *extra: str, method: str = "finetune", out: str = "r") -> list[str]:
    return ["run", "-m", method, *TINY, "--out", str(tmp_path / out), *extra]


# ------------------------------------------------------------------------------------- exit status 2

def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "afile").write_text("x")
    (tmp / "list.yaml").write_text("[1, 2]\n")
    (tmp / "extra.yaml").write_text("set: {lr: 0.1}\ncolour: red\n")
    (tmp / "broken.yaml").write_text("set: [unclosed\n")
    return [
        (_run(tmp, "--device", "foo"), "--device 'foo' is not valid; valid: auto, cpu, cuda, cuda:N"),
        (_run(tmp, "--device", "tpu"), "--device 'tpu' is not valid; valid: auto, cpu, cuda, cuda:N"),
        (_run(tmp, "--device", "cuda:x"), "valid: auto, cpu, cuda, cuda:N"),
        (_run(tmp, out="afile"), "is a file; valid: a directory"),
        (_run(tmp, out="afile/sub"), "which is a file; valid: a directory path"),
        (_run(tmp, "--seed", "-1"), "--seed -1 is out of range; valid: an integer in 0..2**63-1"),
        (_run(tmp, "--seed", str(10**30)), "is out of range; valid: an integer in 0..2**63-1"),
        (_run(tmp, "--bench", "classes_per_task=0"), "classes_per_task=0 is out of range for split-digits"),
        (_run(tmp, "--bench", "n_tasks=100"), "n_tasks must be in 1..5, got 100"),
        (_run(tmp, "--bench", "train_per_class=0"), "--bench train_per_class=0 is out of range; valid: an integer"),
        (_run(tmp, "--bench", "test_per_class=-1"), "--bench test_per_class=-1 is out of range"),
        (_run(tmp, "--data-dir", tmp / "afile"), "--data-dir"),
        (_run(tmp, "--config", tmp / "list.yaml"), "expected a mapping with keys 'set' and/or 'bench'"),
        (_run(tmp, "--config", tmp / "extra.yaml"), "expected a mapping with keys 'set' and/or 'bench'"),
        (_run(tmp, "--config", tmp / "broken.yaml"), "--config"),
        (_run(tmp, "--config", tmp / "missing.yaml"), "No such file"),
        (_run(tmp, "--resume", "--overwrite"), "--resume and --overwrite exclude each other"),
        (_run(tmp, "--scenario", "online"), "unknown scenario 'online'; valid: class, domain, task"),
        (["compare", "--methods", "finetune", *TINY, "--seeds", "0,0", "--out", tmp / "c"], "--seeds expects distinct"),
        (["compare", "--methods", "finetune,finetune", *TINY, "--out", tmp / "c"], "--methods lists a method twice"),
        (["compare", "--methods", "finetune", *TINY, "--out", tmp / "afile"], "--out"),
        (["compare", "--methods", "finetune", *TINY, "--device", "tpu", "--out", tmp / "c"], "--device 'tpu'"),
    ]


def test_bad_values_are_one_line_and_exit_2(capsys, tmp_path):
    for args, needle in _bad_cases(tmp_path):
        code, _, err = _cli(args, capsys)
        assert code == 2, (args, err)
        assert needle in err, (args, err)
        _one_line(err)
    # nothing was created for a refused run: options are checked before the run directory exists
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_that_cannot_be_created(capsys, tmp_path):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    locked_dir.chmod(0o500)
    try:
        for args in (_run(tmp_path, out="ro/run"),
                     ["compare", "--methods", "finetune", *TINY, "--out", locked_dir / "c"]):
            code, _, err = _cli(args, capsys)
            assert code == 2 and "cannot be created" in err and "is not writable" in err
            _one_line(err)
        # the library path (no CLI pre-check) names the option too
        with pytest.raises(ConfigError, match="cannot be created"):
            rundir.make_dir(locked_dir / "run")
    finally:
        locked_dir.chmod(0o700)


def test_unwritable_out_is_named_even_as_root(capsys, tmp_path, monkeypatch):
    # root passes permission checks, so the refusal is exercised by making the parent look read-only
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    code, _, err = _cli(_run(tmp_path, out="run"), capsys)
    assert code == 2 and f"--out {tmp_path / 'run'} cannot be created: {tmp_path} is not writable" in err
    _one_line(err)
    code, _, err = _cli(["run", "-m", "finetune", *TINY, "--out", tmp_path], capsys)
    assert code == 2 and f"--out {tmp_path} is not writable" in err


@pytest.mark.parametrize("setting,key", [("lr=nan", "lr"), ("lr=inf", "lr"), ("momentum=-5", "momentum"),
                                         ("weight_decay=-1", "weight_decay"), ("hidden=-5", "hidden"),
                                         ("hidden=0", "hidden"), ("grad_clip=-1", "grad_clip"),
                                         ("epochs=-1", "epochs")])
def test_out_of_range_hyperparameters(setting, key, capsys, tmp_path):
    code, _, err = _cli(_run(tmp_path, "--set", setting), capsys)
    assert code == 2 and err.startswith(f"forgetless: error: {key}=") and "out of range" in err and "valid" in err
    _one_line(err)


def _reproduce_config(tmp: Path, runs: list[dict]) -> Path:
    path = tmp / "table.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0], "runs": runs, "defaults": {
        "benchmark": "split-digits", "set": {"iterations": 2, "hidden": [8]}, "bench": {"n_tasks": 2}}}))
    return path


def test_reproduce_validates_every_row_before_printing(capsys, tmp_path):
    good = {"label": "FT", "method": "finetune"}
    conf = _reproduce_config(tmp_path, [good])
    for extra, needle in ((["--set", "no_such_key=1"], "row 'FT': unknown --set key 'no_such_key' for finetune"),
                          (["--bench", "colour=red"], "row 'FT': unknown --bench key 'colour' for split-digits"),
                          (["--set", "optimizer=rmsprop"], "valid: adam, sgd"),
                          (["--seeds", "-1"], "--seed -1 is out of range"),
                          (["--device", "tpu"], "--device 'tpu' is not valid")):
        code, out, err = _cli(["reproduce", conf, "--dry-run", *extra], capsys)
        assert code == 2 and needle in err and out == "", (extra, err)
        _one_line(err)
    # a bad second row stops the dry run before the first row's command is printed
    conf = _reproduce_config(tmp_path, [good, {"label": "bad", "method": "nosuch"},
                                        {"label": "bad2", "method": "finetune", "scenario": "online"}])
    code, out, err = _cli(["reproduce", conf, "--dry-run"], capsys)
    assert code == 2 and "row 'bad': unknown method 'nosuch'" in err and out == ""
    conf = _reproduce_config(tmp_path, [good])
    code, out, _ = _cli(["reproduce", conf, "--dry-run"], capsys)
    assert code == 0 and "forgetless run --method finetune" in out


def test_no_traceback_reaches_stderr_of_the_real_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "forgetless", *_run(tmp_path, "--device", "tpu")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "--device 'tpu' is not valid" in proc.stderr


# --------------------------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("method,scenario", [("finetune", "class"), ("ewc", "domain"), ("lwf", "task")])
def test_infinite_lr_diverges_with_exit_3(method, scenario, capsys, tmp_path):
    code, out, err = _cli(_run(tmp_path, "--set", "lr=1e30", "-s", scenario, method=method), capsys)
    assert code == 3, err
    assert "diverged at task 1, step" in err and "=nan" in err and "final accuracy" not in out
    _one_line(err)
    result = json.loads((tmp_path / "r" / "results.json").read_text())
    assert result["complete"] is False and result["diverged"]["task"] == 1
    assert result["diverged"]["value"] == "nan" and isinstance(result["diverged"]["step"], int)
    events = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert events[0]["step"] == 0 and events[-1]["event"] == "diverged"  # step 0 is a log point
    # the failed run released its lock
    with rundir.locked(tmp_path / "r"):
        pass


class _NanAtTask2(Finetune):
    """Finetune whose weights are poisoned before task 2: its first logged loss is nan."""

    name = "nan-at-task-2"

    def learn(self, task, ctx) -> None:
        if ctx.task_index == 1:
            with torch.no_grad():
                next(self.parameters()).fill_(float("nan"))
        super().learn(task, ctx)


class _SilentNan(Finetune):
    """Logs nothing and leaves a nan parameter: only the per-task parameter check can catch it."""

    name = "silent-nan"

    def learn(self, task, ctx) -> None:
        with torch.no_grad():
            next(self.parameters()).fill_(float("inf"))


def _method(cls, bench):
    from forgetless.methods import resolve_config

    return cls(bench.info(), resolve_config("finetune", bench.info(), {"iterations": 2, "hidden": (8,)}))


def test_divergence_at_task_2_keeps_task_1s_checkpoint(tmp_path, tiny_bench):
    bench = tiny_bench(n_tasks=3)
    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"diverged at task 2, step 0 \(loss=nan\); checkpoints/task-1.pt is kept"):
        runner.run(_method(_NanAtTask2, bench), bench, out=out, quiet=True)
    assert (out / "checkpoints" / "task-1.pt").exists() and not (out / "checkpoints" / "task-2.pt").exists()
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is False and len(result["accuracy"]) == 1
    assert result["diverged"] == {"task": 2, "step": 0, "name": "loss", "value": "nan"}


def test_a_non_finite_parameter_is_caught_after_the_task(tmp_path, tiny_bench):
    bench = tiny_bench(n_tasks=2)
    with pytest.raises(DivergedError, match=r"diverged at task 1, after its last step \(parameter .* is not finite"):
        runner.run(_method(_SilentNan, bench), bench, out=tmp_path / "run", quiet=True)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["diverged"]["step"] is None


def test_only_non_finite_real_numbers_count():
    check_logged({"step": 3, "loss": 0.5, "accuracy": [0.1, 0.2], "phase": "train", "ok": True}, 0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(DivergedError, match="diverged at task 2, step 3"):
            check_logged({"step": 3, "loss": bad}, 1)


def test_compare_shows_a_diverged_run_in_its_table(capsys, tmp_path):
    code, _, err = _cli(["compare", "--methods", "finetune", *TINY, "--set", "lr=1e30", "--out", tmp_path / "c"],
                          capsys)
    assert code == 0, err
    table = (tmp_path / "c" / "table.md").read_text()
    assert "| finetune | diverged | diverged |" in table
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["methods"]["finetune"]["n_diverged"] == 1 and summary["methods"]["finetune"]["n_runs"] == 0


# ------------------------------------------------------------------------------------------------- the lock

def _hold(path: Path, record: str):
    """Lock ``path``/.lock through a second open file description (conflicts even within this process)."""
    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / rundir.LOCK_NAME, "a+")  # noqa: SIM115
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write(record)
    fh.flush()
    return fh


def test_a_second_run_into_a_locked_directory_is_refused(capsys, tmp_path):
    record = json.dumps({"pid": 1234, "host": "h", "since": "2025-01-01T00:00:00+00:00"})
    fh = _hold(tmp_path / "r", record)
    try:
        code, _, err = _cli(_run(tmp_path), capsys)
        assert code == 2 and "is in use by pid 1234 on host h (since 2025-01-01T00:00:00+00:00)" in err
        _one_line(err)
        assert not (tmp_path / "r" / "results.json").exists()
        assert (tmp_path / "r" / rundir.LOCK_NAME).read_text() == record  # the holder's record is untouched
    finally:
        fh.close()
    code, _, err = _cli(_run(tmp_path), capsys)
    assert code == 0, err
    assert (tmp_path / "r" / rundir.LOCK_NAME).read_text() == ""  # released (emptied, not removed)


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(capsys, tmp_path):
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from forgetless import rundir\n"
         f"with rundir.locked({str(out)!r}):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _cli(_run(tmp_path), capsys)
        assert code == 2 and f"r is in use by pid {holder.pid} on host " in err and "(since " in err
        _one_line(err)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: its record stays behind
        holder.wait(timeout=30)
    assert f'"pid": {holder.pid}' in (out / rundir.LOCK_NAME).read_text()
    code, _, err = _cli(_run(tmp_path), capsys)
    assert code == 0, err


def test_a_stale_lock_file_with_a_dead_pid_is_taken_over(capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / rundir.LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 1, "host": "gone", "since": "x"}))
    code, _, err = _cli(_run(tmp_path), capsys)
    assert code == 0, err


def test_compare_reuses_a_finished_run_without_its_lock(capsys, tmp_path):
    args = ["compare", "--methods", "finetune", *TINY, "--out", tmp_path / "c"]
    assert _cli(args, capsys)[0] == 0
    fh = _hold(tmp_path / "c" / "finetune" / "seed-0", json.dumps({"pid": 1, "host": "h", "since": "x"}))
    try:
        code, _, err = _cli(args, capsys)  # finished there: reused, the lock is not needed
        assert code == 0, err
        (tmp_path / "c" / "finetune" / "seed-0" / "results.json").unlink()
        code, _, err = _cli(args, capsys)  # not finished: it would train there, and is refused
        assert code == 2 and "is in use by pid 1 on host h" in err
    finally:
        fh.close()


def test_an_lr_so_large_that_torch_overflows_is_a_divergence_not_a_traceback(capsys, tmp_path):
    code, _, err = _cli(_run(tmp_path, "--set", "lr=1e38"), capsys)  # Adam's step size lr/(1-beta1) overflows
    assert code == 3 and "diverged at task 1 (a value overflowed" in err and "Traceback" not in err
    _one_line(err)
