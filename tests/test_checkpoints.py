"""Checkpoints: every method resumes from the code-free format exactly; crafted files never run code."""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import json
import re

import numpy as np
import pytest
import torch

from forgetless import benchmarks, checkpoint, cli, methods, runner
from forgetless.checkpoint import CheckpointError
from forgetless.methods import METHODS

from conftest import synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"iterations": 6, "batch_size": 16, "hidden": (16,)}
QUICK = {"epochs": 1, "pretrain_epochs": 1, "hidden": (16, 16), "batch_size": 32}
HNET = {"iterations": 6, "batch_size": 16, "hidden": (16,), "hnet_hidden": (8,), "chunk_size": 200, "emb_dim": 4,
        "chunk_emb_dim": 4}
HNET_VAE = {"vae_enc_hidden": (16,), "vae_dec_hidden": (16,), "vae_latent": 4, "vae_condition_dim": 4,
            "vae_hnet_hidden": (8,), "vae_chunk_size": 200, "vae_emb_dim": 4, "vae_chunk_emb_dim": 4}
SPACENET = {"hidden": (20, 20), "selected": (6, 6), "specific": (3, 3), "connections": (100, 30, 8), "epochs": 1,
            "batch_size": 32, "lr": 0.1}
# the smallest budget of every registered method that still exercises what it keeps between tasks
CONFIGS: dict[str, dict] = {
    **{name: FAST for name in ("finetune", "joint", "ewc", "online-ewc", "si", "mas", "lwf", "agem", "replay")},
    "icarl": {**FAST, "buffer_size": 12},
    "dgr": {**FAST, "latent": 4},
    "dgr-distill": {**FAST, "latent": 4},
    **{name: QUICK for name in ("classifier-only", "individual", "piggyback", "affine-simple")},
    "affine-full": {**QUICK, "surrogate": "sigmoid", "channel_wise": True},
    "packnet": {**QUICK, "retrain_epochs": 1, "prune_last": True},
    "hat": {"epochs": 1, "hidden": (16, 16), "lr_patience": 2},
    "ccgn": {"width": 4, "epochs": 1, "batch_size": 16, "sparsity_patience": 0, "noise_free_epochs": 0,
             "memory": "episodic", "buffer_size": 12},
    "dgmw": {"iterations": 4, "ngf": 2, "ndf": 4, "batch_size": 16},
    "dgma": {"iterations": 4, "ngf": 2, "ndf": 4, "batch_size": 16},
    "hnet": HNET,
    "hnet-tir": {**HNET, **HNET_VAE},
    "hnet-r": {**FAST, **HNET_VAE},
    **{name: SPACENET for name in ("static-sparse", "spacenet", "spacenet-rehearsal")},
}


def _scenario(name: str) -> str:
    return "class" if "class" in METHODS[name].cls.scenarios else "task"


def test_every_registered_method_has_a_tiny_configuration():
    assert set(CONFIGS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_resumed_run_equals_the_uninterrupted_one(name, tmp_path):
    bench = synthetic_benchmark(_scenario(name), n_tasks=2, per_class=20)
    out = tmp_path / "run"
    options = {"seed": 1, "config": CONFIGS[name], "out": out, "quiet": True}
    full = runner.run(name, bench, keep_checkpoints=True, **options)
    first = torch.load(out / "checkpoints" / "task-1.pt", map_location="cpu", weights_only=True)
    assert first["format"] == runner.CHECKPOINT_FORMAT == 2
    last = out / "checkpoints" / "task-2.pt"
    expected = torch.load(last, map_location="cpu", weights_only=True)["method"]
    last.unlink()
    resumed = runner.run(name, bench, resume=True, **options)
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["task_inference"] == full["task_inference"]
    assert resumed["storage"] == full["storage"]
    # the whole method after task 2 (weights, optimiser moments, masks, buffers, counters) is the same
    _assert_same_tree(torch.load(last, map_location="cpu", weights_only=True)["method"], expected)


def _nodes(tree, found=None) -> dict:
    """Every memoised node of an encoded tree by its id."""
    found = {} if found is None else found
    if isinstance(tree, dict):
        if tree.get("$") != "ref" and "id" in tree:
            found[tree["id"]] = tree
        for v in tree.values():
            _nodes(v, found)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _nodes(v, found)
    return found


def _assert_same_tree(a, b) -> None:
    """Equal trees up to which objects are shared: after a resume, what task 1 stored no longer shares
    objects with the benchmark rebuilt for task 2 (a transform, say), as with pickle before."""
    ids_a, ids_b, seen = _nodes(a), _nodes(b), set()

    def same(x, y, where):
        if isinstance(x, dict) and x.get("$") == "ref":
            x = ids_a[x["id"]]
        if isinstance(y, dict) and y.get("$") == "ref":
            y = ids_b[y["id"]]
        assert type(x) is type(y), where
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), where
        elif isinstance(x, dict):
            if (id(x), id(y)) in seen:
                return
            seen.add((id(x), id(y)))
            assert x.keys() - {"id"} == y.keys() - {"id"}, where
            for k in x.keys() - {"id"}:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                same(u, v, f"{where}[{i}]")
        elif isinstance(x, float) and x != x:
            assert y != y, where  # nan
        else:
            assert x == y, f"{where}: {x!r} vs {y!r}"

    same(a, b, "method")


# ------------------------------------------------------------------------------------------ the format

class UserNet(torch.nn.Module):
    """A user's own backbone class: not forgetless, not torch.nn."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)


Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: int
    y: tuple[int, ...] = (1, 2)


class Colour(enum.Enum):
    RED = 1


def _round_trip(obj, allow=None):
    buf = io.BytesIO()
    torch.save(checkpoint.encode(obj), buf)
    buf.seek(0)
    return checkpoint.decode(torch.load(buf, weights_only=True), allow=allow)


def test_round_trip_keeps_sharing_cycles_and_every_kind_of_value():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(7)
    cyclic: list = [1]
    cyclic.append(cyclic)
    counts = collections.defaultdict(list, {3: [1]})
    box = {"net": net, "same_net": net, "opt": opt, "gen": gen, "gen_again": gen, "cyclic": cyclic, "counts": counts,
           "pair": Pair(1, "x"), "frozen": Frozen(3), "colour": Colour.RED, "set": {1, 2}, "fs": frozenset({"a"}),
           "odict": collections.OrderedDict(b=1, a=2), "deque": collections.deque([1, 2], maxlen=3),
           "tuple": (1, (2.5, None)), "device": torch.device("cpu"), "dtype": torch.float16,
           "size": torch.Size([2, 3]), "array": np.arange(4, dtype=np.int16), "scalar": np.float32(1.5),
           "bytes": b"\x00ab", "fn": torch.nn.functional.relu, "cls": torch.nn.Linear, "view": net[0].weight[0],
           (1, 2): "tuple key", 3: "int key"}
    back = _round_trip(box, allow=checkpoint.names_in(box))  # Pair, Frozen, Colour: this module's own
    assert back["net"] is back["same_net"] and back["gen"] is back["gen_again"]
    params = list(back["net"].parameters())
    assert back["opt"].param_groups[0]["params"] == params and all(p in back["opt"].state for p in params)
    assert all(a.is_set_to(b) or torch.equal(a, b) for a, b in zip(params, net.parameters(), strict=True))
    assert torch.equal(back["opt"].state[params[0]]["exp_avg"], opt.state[net[0].weight]["exp_avg"])
    assert back["view"].untyped_storage().data_ptr() == params[0].untyped_storage().data_ptr()  # still a view
    assert torch.equal(torch.rand(3, generator=back["gen"]), torch.rand(3, generator=gen))
    assert back["cyclic"][1] is back["cyclic"]
    assert back["counts"]["new"] == [] and back["counts"][3] == [1]
    assert type(back["pair"]) is Pair and back["pair"].b == "x"
    assert back["frozen"] == Frozen(3) and back["colour"] is Colour.RED
    assert list(back["odict"]) == ["b", "a"] and back["deque"].maxlen == 3
    for key in ("set", "fs", "tuple", "device", "dtype", "size", "bytes", "fn", "cls", (1, 2), 3):
        assert back[key] == box[key] and type(back[key]) is type(box[key])
    assert back["array"].dtype == np.int16 and back["scalar"] == np.float32(1.5)
    x = torch.randn(2, 3)
    assert torch.equal(back["net"](x), net(x))
    back["opt"].step()  # a rebuilt optimiser still works


def test_what_has_no_code_free_form_is_named_by_its_path():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    net[0].act = lambda x: x
    with pytest.raises(CheckpointError, match=r"Sequential\._modules\['0'\]\.act .*lambda"):
        checkpoint.encode(net)
    assert not checkpoint.storable(lambda shape: None) and checkpoint.storable(torch.nn.Linear)


def test_a_user_class_loads_only_when_the_fresh_model_has_it():
    tree = checkpoint.encode({"net": UserNet()})
    with pytest.raises(CheckpointError, match=r"x\.pt: refuses to load 'test_checkpoints\.UserNet'"):
        checkpoint.decode(tree, source="x.pt")
    back = checkpoint.decode(tree, allow=checkpoint.names_in(UserNet()))
    assert isinstance(back["net"], UserNet)


@pytest.mark.parametrize("node", [
    {"$": "global", "name": "posix:system"},
    {"$": "global", "name": "builtins:eval"},
    {"$": "global", "name": "forgetless.runner:torch.load"},  # reachable from an allowed module: still refused
    {"$": "global", "name": "forgetless.checkpoint:os.system"},
    {"$": "object", "id": 0, "class": "subprocess:Popen", "state": {}},
    {"$": "defaultdict", "id": 0, "factory": {"$": "global", "name": "os:getcwd"}, "items": []},
])
def test_a_crafted_tree_names_no_callable_outside_the_allowlist(node):
    with pytest.raises(CheckpointError, match=r"^x\.pt: refuses to load '[\w.]+' \(a checkpoint holds only"):
        checkpoint.decode({"$": "list", "id": 9, "items": [node]}, source="x.pt")


@pytest.mark.parametrize("node", [
    {"$": "ref", "id": 5}, {"$": "what"}, {"$": "dtype", "v": "Tensor"}, [1, {}],
    # a defaultdict calls its factory: an allowlisted class is still not one (its constructor would run)
    {"$": "defaultdict", "id": 0, "factory": {"$": "global", "name": "forgetless.training.context:Context"},
     "items": []},
])
def test_a_malformed_tree_is_one_error(node):
    with pytest.raises(CheckpointError, match="malformed checkpoint"):
        checkpoint.decode(node)


# ---------------------------------------------------------------------------------------- through the CLI

CLI = ["run", "-m", "finetune", "-b", "split-digits", "--bench", "n_tasks=2", "--set", "iterations=2",
       "--set", "hidden=8", "--quiet"]


class _SideEffect:
    """Unpickling this creates a file: what a crafted checkpoint would do with a shell command."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _cli(args, capsys):
    code = cli.main(args)
    _, err = capsys.readouterr()
    return code, err.strip().splitlines()


def test_a_crafted_checkpoint_runs_nothing_and_is_one_line_exit_2(tmp_path, capsys):
    out, side = tmp_path / "run", tmp_path / "side-effect"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": 2, "task_index": 0, "method": _SideEffect(side)}, out / "checkpoints" / "task-1.pt")
    code, err = _cli([*CLI, "--out", str(out), "--resume"], capsys)
    assert code == 2 and len(err) == 1, err
    assert re.search(r"checkpoints/task-1\.pt: refuses to load '(io|builtins)\.open'", err[0])
    assert not side.exists()


def test_a_checkpoint_of_the_old_pickle_format_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli([*CLI, "--out", str(out)], capsys)[0] == 0
    model = methods.create("finetune", benchmarks.build("split-digits", "class", 0, n_tasks=2).info(), hidden=8)
    state = torch.load(out / "checkpoints" / "task-2.pt", weights_only=True)
    (out / "checkpoints" / "task-2.pt").unlink()
    torch.save({**state, "format": 1, "method": model}, out / "checkpoints" / "task-1.pt")  # format 1: a pickle
    code, err = _cli([*CLI, "--out", str(out), "--resume"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "task-1.pt: refuses to load 'forgetless." in err[0] and "--overwrite" in err[0]


def test_a_truncated_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "task-1.pt").write_bytes(b"PK\x03\x04 truncated")
    code, err = _cli([*CLI, "--out", str(out), "--resume"], capsys)
    assert code == 2 and len(err) == 1 and "task-1.pt: cannot read the checkpoint" in err[0], err


def test_resume_and_overwrite_remove_temporaries_a_killed_write_left(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli([*CLI, "--out", str(out)], capsys)[0] == 0
    stale = [out / "checkpoints" / ".task-2.pt.k3j2x9.tmp", out / ".results.json.a8b7c6.tmp"]
    for flag in ("--resume", "--overwrite"):
        for path in stale:
            path.write_bytes(b"half a file")
        keep = out / "notes.tmp"  # not an atomic write's temporary
        keep.write_text("mine")
        assert _cli([*CLI, "--out", str(out), flag], capsys)[0] == 0
        assert not any(p.exists() for p in stale) and keep.exists(), flag


@pytest.mark.parametrize("text", ["{\"accuracy\": [[0.5", "[1, 2]"])
def test_a_damaged_results_json_is_one_line_exit_2(tmp_path, capsys, text):
    out = tmp_path / "run"
    assert _cli([*CLI, "--out", str(out)], capsys)[0] == 0
    (out / "results.json").write_text(text)
    code, err = _cli([*CLI, "--out", str(out), "--resume"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "run/results.json is damaged" in err[0] and "--overwrite" in err[0]
    (out / "results.json").unlink()  # as the message says: the run continues from its checkpoint
    assert _cli([*CLI, "--out", str(out), "--resume"], capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["complete"]
