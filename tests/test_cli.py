"""The command line: one-line errors with exit status 2, run / compare / reproduce / list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgetless import reproduce
from forgetless.cli import main

QUICK = ["--set", "epochs=1", "--set", "hidden=16", "--quiet"]


def _cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,needle", [
    (["run", "-m", "nope", "-b", "split-digits"], "unknown method 'nope'; valid: "),
    (["run", "-m", "finetune", "-b", "split-digitz"], "unknown benchmark 'split-digitz'; valid:"),
    (["run", "-m", "finetune", "-b", "split-digits", "-s", "online"], "unknown scenario 'online'; valid: class"),
    (["run", "-m", "finetune", "-b", "split-digits", "--set", "lr2=1"], "unknown --set key 'lr2' for finetune"),
    (["run", "-m", "finetune", "-b", "split-digits", "--set", "lr"], "--set expects key=value"),
    (["run", "-m", "finetune", "-b", "split-digits", "--set", "optimizer=rmsprop"], "valid: adam, sgd"),
    (["run", "-m", "finetune", "-b", "split-digits", "--bench", "nclasses=3"], "unknown --bench key 'nclasses'"),
    (["run", "-m", "finetune", "-b", "split-digits", "--set", "backbone=vgg"], "unknown backbone 'vgg'"),
    (["run", "-b", "split-digits"], "required: --method"),
    (["reproduce", "no-such-table"], "reproduction config 'no-such-table' not found"),
    (["run", "-m", "dgr", "-b", "split-digits", "--bench", "normalize=true"], "inputs must lie in [0, 1]"),
    (["run", "-m", "hnet-r", "-b", "split-digits", "--bench", "normalize=true"], "use --bench normalize=false"),
    (["compare", "-b", "split-digits", "--methods", "finetune", "--seeds", "a", "--out", "x"], "--seeds expects"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(args, capsys)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("forgetless: error: ")
    assert "Traceback" not in err


def test_missing_data_is_one_line(capsys, tmp_path):
    code, _, err = _cli(["run", "-m", "finetune", "-b", "split-mnist", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "mnist: files not found in" in err and err.count("\n") == 1


def test_run_writes_results_and_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "r"
    code, stdout, _ = _cli(["run", "-m", "finetune", "-b", "split-digits", "--out", str(out), *QUICK], capsys)
    assert code == 0 and "final accuracy" in stdout
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["epochs"] == 1 and result["scenario"] == "class"
    code, _, err = _cli(["run", "-m", "finetune", "-b", "split-digits", "--out", str(out), *QUICK], capsys)
    assert code == 2 and "already holds a finished run" in err


def test_yaml_config_file_and_flag_precedence(capsys, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"set": {"epochs": 3, "hidden": [8]}, "bench": {"n_tasks": 2}}))
    out = tmp_path / "r"
    code, _, _ = _cli(["run", "-m", "finetune", "-b", "split-digits", "--config", str(conf), "--set", "epochs=1",
                       "--out", str(out), "--quiet"], capsys)
    result = json.loads((out / "results.json").read_text())
    assert code == 0 and result["config"]["epochs"] == 1 and result["config"]["hidden"] == [8]
    assert len(result["accuracy"]) == 2


def test_compare_writes_table_and_plots(capsys, tmp_path):
    out = tmp_path / "cmp"
    code, _, _ = _cli(["compare", "-b", "split-digits", "--methods", "finetune,joint", "--seeds", "0,1",
                            "--out", str(out), "--bench", "n_tasks=3", *QUICK], capsys)
    assert code == 0
    table = (out / "table.md").read_text()
    assert "| finetune |" in table and "| joint |" in table and "±" in table
    for png in ("accuracy_matrices.png", "accuracy_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["joint"]["n_runs"] == 2
    # a second compare reuses the finished runs instead of failing or recomputing them
    code, _, _ = _cli(["compare", "-b", "split-digits", "--methods", "finetune", "--seeds", "0", "--out", str(out),
                       "--bench", "n_tasks=3", *QUICK], capsys)
    assert code == 0


def test_reproduce_prints_ours_beside_the_paper(capsys, tmp_path):
    conf = tmp_path / "table.yaml"
    conf.write_text(yaml.safe_dump({
        "title": "Toy table", "source": "nowhere", "seeds": [0],
        "defaults": {"benchmark": "split-digits", "set": {"epochs": 1, "hidden": [16]}, "bench": {"n_tasks": 2}},
        "runs": [{"label": "FT class", "method": "finetune", "scenario": "class", "paper": 50.0},
                 {"label": "Joint A2", "method": "joint", "metric": "A2", "paper": {"mean": 99.0, "std": 0.5}}],
    }))
    code, stdout, _ = _cli(["reproduce", str(conf), "--dry-run"], capsys)
    assert code == 0 and "forgetless run --method finetune --benchmark split-digits" in stdout
    code, stdout, _ = _cli(["reproduce", str(conf), "--out", str(tmp_path / "rep"), "--quiet"], capsys)
    assert code == 0
    md = (tmp_path / "rep" / "reproduce.md").read_text()
    assert "| FT class | final_accuracy | 50.00 |" in md and "| Joint A2 | A2 | 99.00 ± 0.50 |" in md
    rows = json.loads((tmp_path / "rep" / "reproduce.json").read_text())["rows"]
    assert len(rows[0]["ours_values"]) == 1 and 0 <= rows[0]["ours_values"][0] <= 1
    # --collect trains nothing: the finished seed-0 runs are tabulated, the seed-1 ones that were never run
    # are left out of the count (and no seed-1 directory appears)
    code, _, _ = _cli(["reproduce", str(conf), "--out", str(tmp_path / "rep"), "--seeds", "0,1", "--collect"], capsys)
    assert code == 0 and not (tmp_path / "rep" / "ft-class" / "seed-1").exists()
    collected = json.loads((tmp_path / "rep" / "reproduce.json").read_text())["rows"]
    assert collected[0]["ours_values"] == rows[0]["ours_values"]
    assert "| FT class | final_accuracy | 50.00 |" in (tmp_path / "rep" / "reproduce.md").read_text()
    # a finished run is reused only if it was made with the settings asked for: a stale one is a clear error
    code, _, err = _cli(["reproduce", str(conf), "--out", str(tmp_path / "rep"), "--only", "FT class",
                         "--bench", "class_order=random", "--quiet"], capsys)
    assert code == 2 and "made with other settings" in err and "class_order: None vs 'random'" in err



def test_reproduce_only_selects_by_substring_or_exact_label(tmp_path):
    from forgetless import reproduce

    conf = tmp_path / "table.yaml"
    rows = [{"label": label, "method": "finetune", "scenario": "class"} for label in ("S-CL1 HNET", "S-CL1 HNET+R")]
    conf.write_text(yaml.safe_dump({"seeds": [0], "defaults": {"benchmark": "split-digits"}, "runs": rows}))
    for only, labels in (("hnet", ["S-CL1 HNET", "S-CL1 HNET+R"]), ("s-cl1 hnet", ["S-CL1 HNET"]),
                         ("+R", ["S-CL1 HNET+R"])):
        picked = reproduce.reproduce(str(conf), out=tmp_path / "rep", only=only, dry_run=True)["rows"]
        assert [r["label"] for r in picked] == labels


def test_reproduce_rejects_bad_configs(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [{label: x, method: finetune, benchmark: split-digits, colour: red}]")
    code, _, err = _cli(["reproduce", str(bad)], capsys)
    assert code == 2 and "unknown keys ['colour']" in err
    bad.write_text("runs: [{label: x, method: finetune, benchmark: split-digits, metric: speed}]")
    code, _, err = _cli(["reproduce", str(bad)], capsys)
    assert code == 2 and "unknown metric 'speed'" in err
    bad.write_text("runs: [unclosed")
    code, _, err = _cli(["reproduce", str(bad)], capsys)
    assert code == 2 and "not valid YAML" in err


def test_list(capsys):
    code, out, _ = _cli(["list"], capsys)
    assert code == 0
    for name in ("finetune", "joint", "split-mnist", "permuted-mnist", "cifar10-100", "svhn", "scenarios: task"):
        assert name in out


def test_console_entry_point_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "forgetless", "run", "-m", "x", "-b", "split-digits"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("forgetless: error: unknown method 'x'")


def test_reproduction_configs_ship_inside_the_package():
    """Configs are package data: found by name next to the installed module, declared for the wheel."""
    import tomllib

    from forgetless import reproduce

    assert reproduce.CONFIG_DIR.parent == Path(reproduce.__file__).resolve().parent
    names = sorted(p.stem for p in reproduce.CONFIG_DIR.glob("*.yaml"))
    assert "spacenet-table2" in names and len(names) >= 18
    assert reproduce.find_config("spacenet-table2") == reproduce.CONFIG_DIR / "spacenet-table2.yaml"
    assert reproduce.find_config("configs/spacenet-table2.yaml") == reproduce.CONFIG_DIR / "spacenet-table2.yaml"
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "configs/*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["forgetless"]


def test_show_lists_every_field_of_every_method_and_benchmark(capsys):
    """`forgetless show` is generated from the config dataclasses: every field of every registered method's
    and benchmark's config appears with its type and default."""
    import dataclasses

    from forgetless import benchmarks, methods

    for name, spec in methods.METHODS.items():
        assert main(["show", name]) == 0
        out = capsys.readouterr().out
        keys = {line.split()[0] for line in out.splitlines()[4:] if line.strip()}
        assert keys == {f.name for f in dataclasses.fields(spec.cls.Config)}, name
    for name, spec in benchmarks.BENCHMARKS.items():
        assert main(["show", name]) == 0
        out = capsys.readouterr().out
        keys = {line.split()[0] for line in out.splitlines()[4:] if line.strip()}
        assert keys == {f.name for f in dataclasses.fields(spec.options)}, name


def test_show_gives_type_range_source_and_benchmark_defaults(capsys):
    assert main(["run", "-m", "hat", "--help-set"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[4:]}
    assert "float" in rows["lr"] and "a finite number > 0" in rows["lr"]
    assert "'sgd' | 'adam'" in rows["optimizer"] and "sgd, adam" in rows["optimizer"]
    assert "mlp hidden sizes" in rows["hidden"]  # the field's comment is its documented source
    assert main(["show", "ewc", "--benchmark", "split-digits", "--scenario", "task"]) == 0
    out = capsys.readouterr().out
    ewc = next(line for line in out.splitlines() if line.startswith("ewc_lambda"))
    assert "100000.0 (benchmark; class default 1000000000.0)" in ewc
    assert main(["show", "no-such-thing"]) == 2
    assert "unknown method or benchmark 'no-such-thing'" in capsys.readouterr().err


def test_compare_per_method_overrides_reach_only_their_method(tmp_path, capsys):
    out = tmp_path / "cmp"
    conf = tmp_path / "c.yaml"
    conf.write_text("set: {iterations: 3, batch_size: 16, hidden: [8]}\nmethods: {ewc: {ewc_lambda: 7}}\n")
    code = main(["compare", "-b", "split-digits", "--methods", "replay,ewc", "--config", str(conf), "--set",
                 "replay.buffer_size=10", "--bench", "n_tasks=2", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    replay = json.loads((out / "replay" / "seed-0" / "results.json").read_text())["config"]
    ewc = json.loads((out / "ewc" / "seed-0" / "results.json").read_text())["config"]
    assert replay["buffer_size"] == 10 and "buffer_size" not in ewc
    assert ewc["ewc_lambda"] == 7 and "ewc_lambda" not in replay
    assert replay["iterations"] == ewc["iterations"] == 3


def test_compare_validates_every_method_and_key_before_training(tmp_path, capsys):
    out = tmp_path / "cmp"
    for argv, message in [
        (["--set", "buffer_size=10"], "unknown --set key 'buffer_size' for finetune"),
        (["--set", "ewc.nope=1"], "per-method options for ewc, which is not in --methods"),
        (["--set", "replay.lr=-1"], "lr=-1.0 is out of range for replay"),
    ]:
        code = main(["compare", "-b", "split-digits", "--methods", "finetune,replay", "--set", "iterations=2",
                     "--out", str(out), "--quiet", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()  # nothing was trained


def test_plot_draws_a_runs_matrix_curves_and_losses(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "-m", "ewc", "-b", "split-digits", "--set", "iterations=4", "--set", "hidden=8",
                 "--bench", "n_tasks=2", "--out", str(run), "--quiet"]) == 0
    assert main(["plot", str(run)]) == 0
    for name in ("accuracy_matrix.png", "accuracy_curves.png", "losses.png"):
        assert (run / name).stat().st_size > 5_000, name
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.stem for p in reproduce.CONFIG_DIR.glob("*.yaml")))
def test_every_packaged_config_states_its_runtime_and_dry_run_prints_it_once_per_run(name, capsys, tmp_path):
    conf = reproduce.load_config(reproduce.find_config(name))
    assert isinstance(conf.get("runtime"), str) and ("measured" in conf["runtime"]), name
    result = reproduce.reproduce(name, out=tmp_path, dry_run=True)
    out = capsys.readouterr().out.splitlines()
    n_runs = len({(r["label"], s) for r in result["rows"] for s in r["seeds"]})
    assert out[0] == f"# {result['runtime']}" and f"({n_runs} run" in out[0]
    assert len(out) - 1 == n_runs == len(set(out[1:]))  # every run's command, each once
