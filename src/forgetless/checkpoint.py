"""Checkpoints that cannot run code when they are loaded.

A method is an ``nn.Module`` whose architecture grows over tasks (per-task masks, gates, heads, growing
generators, buffers, python counters), so a checkpoint must hold the whole object graph, not a
``state_dict``. Pickling it would let a crafted ``task-K.pt`` run any callable on ``--resume``. Instead
:func:`encode` turns the graph into a tree of tensors, dicts, lists, tuples and str/int/float/bool/None
(what ``torch.load(..., weights_only=True)`` accepts), and :func:`decode` rebuilds it, creating objects only
for classes on an allowlist, with ``cls.__new__(cls)`` and ``__setstate__`` or a ``__dict__`` update, as
pickle does, but never calling a constructor or any other callable named by the file.

Every node that is not a tensor or an atom is a dict with the key ``"$"`` naming its kind::

    {"$": "list", "id": 3, "items": [...]}         {"$": "ref", "id": 3}   (the same object again)
    {"$": "dict", "id": 4, "items": [[k, v], ...]} {"$": "tuple", "items": [...]}
    {"$": "set" | "frozenset", ...}                {"$": "global", "name": "torch.nn.functional:relu"}
    {"$": "object", "id": 5, "class": "forgetless.methods.ewc:EWC", "state": ..., "items": ..., "list": ...}
    {"$": "odict" | "defaultdict" | "deque" | "generator" | "device" | "dtype" | "size" | "enum" | "ndarray"
          | "npscalar" | "bytes" | "method", ...}

Mutable objects are memoised by id, so what the method shares (a Parameter held by a layer and by an
optimiser, a module held twice) is shared after loading; tensors are stored as tensors, and torch's own
serialisation keeps the storage they share.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import enum
import importlib
import pickle
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ForgetlessError

FORMAT = 2  # 1: a pickle of the method (could run code when loaded); 2: the tree described above
TAG = "$"
_ATOMS = (type(None), bool, int, float, str)
_WHY = "a checkpoint holds only tensors, containers and forgetless/torch.nn objects"
# Types a defaultdict's factory may be (it is called): constructing them runs no code from the file.
_BUILTIN_TYPES = (list, dict, set, frozenset, tuple, int, float, str, bool, bytes)
_BUILTINS = {f"builtins:{t.__name__}" for t in _BUILTIN_TYPES}


class CheckpointError(ForgetlessError):
    """A checkpoint cannot be written (an object has no code-free form) or is refused when read."""


class _Unstorable(Exception):
    """Raised while encoding; carries the attribute path back up to name the culprit."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []


def _module_allowed(module: str) -> bool:
    """Modules whose classes and functions a checkpoint may name (the brief's allowlist)."""
    return (module in ("forgetless", "torch.nn", "torch.nn.functional", "torch.nn.parameter",
                       "torch.nn.utils.parametrize", "torch.optim", "collections")
            or module.startswith(("forgetless.", "torch.nn.modules.", "torch.optim.")))


def _global_name(obj: Any) -> str:
    """``module:qualname`` of a class or function, if importing that name gives ``obj`` back (as pickle
    requires: a lambda or a function defined inside another has no such name)."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qual, str) or "<" in qual:
        raise _Unstorable(f"{obj!r} is not importable by name (a lambda or a local function or class?)")
    if _resolve_attr(sys.modules.get(module), qual) is not obj:
        raise _Unstorable(f"{obj!r} is not importable as {module}.{qual}")
    return f"{module}:{qual}"


def _resolve_attr(root: Any, qual: str) -> Any:
    obj = root
    for part in qual.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


# ------------------------------------------------------------------------------------------ encode

class _Encoder:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.keep: list[Any] = []  # holds every memoised object, so that no id is reused during the walk
        self.globals: set[str] = set()  # every class and function named (the allowlist a template adds)
        self.tuples: set[int] = set()  # tuples being encoded: a cycle through one cannot be rebuilt

    def _memo(self, obj: Any) -> int:
        self.keep.append(obj)
        self.ids[id(obj)] = n = len(self.ids)
        return n

    def _name(self, obj: Any) -> str:
        name = _global_name(obj)
        self.globals.add(name)
        return name

    def _each(self, items, label) -> list[Any]:
        out = []
        for i, item in enumerate(items):
            try:
                out.append(self(item))
            except _Unstorable as exc:
                exc.path.append(label(i, item))
                raise
        return out

    def _pairs(self, items) -> list[list[Any]]:
        out = []
        for k, v in items:
            try:
                out.append([self(k), self(v)])
            except _Unstorable as exc:
                exc.path.append(f"[{k!r}]")
                raise
        return out

    def __call__(self, obj: Any) -> Any:
        t = type(obj)
        if t in _ATOMS:
            return obj
        if t is torch.Tensor or t is nn.Parameter:
            if obj.__dict__:  # attributes set on a tensor would be pickled with torch's own reducer
                raise _Unstorable(f"a tensor with python attributes {sorted(obj.__dict__)}")
            return obj  # torch serialises it (and the storage it shares with other tensors)
        if t is torch.device:
            return {TAG: "device", "v": str(obj)}
        if t is torch.dtype:
            return {TAG: "dtype", "v": str(obj).removeprefix("torch.")}
        if t is torch.Size:
            return {TAG: "size", "items": [int(d) for d in obj]}
        if t is tuple:
            if id(obj) in self.tuples:
                raise _Unstorable("a tuple that contains itself")
            self.tuples.add(id(obj))
            try:
                return {TAG: "tuple", "items": self._each(obj, lambda i, _: f"[{i}]")}
            finally:
                self.tuples.discard(id(obj))
        if id(obj) in self.ids:
            return {TAG: "ref", "id": self.ids[id(obj)]}
        if t is list:
            node: dict[str, Any] = {TAG: "list", "id": self._memo(obj)}
            node["items"] = self._each(obj, lambda i, _: f"[{i}]")
            return node
        if t is dict:
            node = {TAG: "dict", "id": self._memo(obj)}
            node["items"] = self._pairs(obj.items())
            return node
        if t is set or t is frozenset:
            node = {TAG: t.__name__, "id": self._memo(obj)}
            # sorted: a set's iteration order depends on the process's string hashes, and checkpoints of the
            # same state should be the same file (resumed and uninterrupted runs are compared that way)
            ordered = sorted(obj, key=lambda item: (type(item).__name__, repr(item)))
            node["items"] = self._each(ordered, lambda i, item: f"{{{item!r}}}")
            return node
        if t is collections.OrderedDict:
            node = {TAG: "odict", "id": self._memo(obj)}
            node["items"] = self._pairs(obj.items())
            return node
        if t is collections.defaultdict:
            node = {TAG: "defaultdict", "id": self._memo(obj)}
            node["factory"] = self(obj.default_factory)
            node["items"] = self._pairs(obj.items())
            return node
        if t is collections.deque:
            node = {TAG: "deque", "id": self._memo(obj), "maxlen": obj.maxlen}
            node["items"] = self._each(obj, lambda i, _: f"[{i}]")
            return node
        if t is torch.Generator:
            return {TAG: "generator", "id": self._memo(obj), "device": str(obj.device), "state": obj.get_state()}
        if t is np.ndarray:
            if obj.dtype.hasobject:
                raise _Unstorable("a numpy array of python objects")
            return {TAG: "ndarray", "v": torch.from_numpy(np.ascontiguousarray(obj).copy())}
        if isinstance(obj, np.generic):
            return {TAG: "npscalar", "dtype": obj.dtype.str, "v": obj.item()}
        if t is bytes:
            return {TAG: "bytes", "v": torch.frombuffer(bytearray(obj), dtype=torch.uint8) if obj else
                    torch.zeros(0, dtype=torch.uint8)}
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            return {TAG: "global", "name": self._name(obj)}
        if t is types.MethodType:
            return {TAG: "method", "self": self(obj.__self__), "name": obj.__func__.__name__}
        if isinstance(obj, enum.Enum):
            return {TAG: "enum", "class": self._name(t), "name": obj.name}
        return self._object(obj)

    def _object(self, obj: Any) -> dict[str, Any]:
        """Any other instance, as pickle's default protocol-2+ reduction sees it: ``cls.__new__(cls)``, then
        list items, dict items and the state. Anything reduced otherwise has no code-free form here."""
        t = type(obj)
        if isinstance(obj, types.ModuleType) or t in copyreg.dispatch_table:
            raise _Unstorable(f"a {t.__module__}.{t.__qualname__}")
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception as exc:
            raise _Unstorable(f"a {t.__module__}.{t.__qualname__} ({exc})") from None
        args = (t, *obj) if isinstance(obj, tuple) else (t,)  # a namedtuple is created from its items
        if (not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] is not copyreg.__newobj__
                or reduced[1] != args):
            raise _Unstorable(f"a {t.__module__}.{t.__qualname__} (it is pickled through a custom reduction)")
        node: dict[str, Any] = {TAG: "object", "id": self._memo(obj), "class": self._name(t)}
        state, listitems, dictitems = (list(reduced) + [None] * 5)[2:5]
        if isinstance(obj, tuple):
            node["tuple"] = self._each(obj, lambda i, _: f"[{i}]")
        if listitems is not None:
            node["list"] = self._each(listitems, lambda i, _: f"[{i}]")
        if dictitems is not None:
            node["items"] = self._pairs(dictitems)
        if state is not None:
            try:
                node["state"] = self(state)
            except _Unstorable as exc:
                if isinstance(state, dict) and exc.path and exc.path[-1].startswith("["):
                    exc.path[-1] = "." + exc.path[-1][2:-2]  # an attribute: obj.name, not obj['name']
                raise
        return node


def encode(obj: Any) -> Any:
    """The code-free tree of ``obj`` (see the module docstring); raises CheckpointError naming the first
    object that has no such form, by its attribute path."""
    try:
        return _Encoder()(obj)
    except _Unstorable as exc:
        where = "".join(reversed(exc.path)) or "(the object itself)"
        raise CheckpointError(f"cannot store {type(obj).__name__}{where} in a checkpoint: {exc.what}") from None


def storable(obj: Any) -> bool:
    """Whether ``obj`` can be stored in a checkpoint (a lambda, for instance, cannot)."""
    try:
        _Encoder()(obj)
    except _Unstorable:
        return False
    return True


def names_in(obj: Any) -> set[str]:
    """Every class and function ``module:qualname`` in ``obj``'s graph: what a freshly built model allows
    a checkpoint of the same run to contain (a user's own backbone class, for instance)."""
    enc = _Encoder()
    with contextlib.suppress(_Unstorable):  # what was seen before an unstorable part still counts
        enc(obj)
    return enc.globals


# ------------------------------------------------------------------------------------------ decode

class _Refused(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Decoder:
    def __init__(self, extra: set[str]) -> None:
        self.extra = extra
        self.objs: dict[int, Any] = {}

    def resolve(self, name: Any) -> Any:
        if not isinstance(name, str) or ":" not in name:
            raise ValueError(f"bad global name {name!r}")
        module, qual = name.split(":", 1)
        if not (_module_allowed(module) or name in self.extra or name in _BUILTINS):
            raise _Refused(f"{module}.{qual}")
        root = sys.modules.get(module)
        if root is None and _module_allowed(module):
            try:
                root = importlib.import_module(module)
            except ImportError:
                root = None
        obj = _resolve_attr(root, qual) if "<" not in qual else None
        # the name must be the object's own: ``forgetless.runner:torch.load`` reaches torch.load, refused
        if (obj is None or getattr(obj, "__module__", None) != module
                or getattr(obj, "__qualname__", None) != qual):
            raise _Refused(f"{module}.{qual}")
        return obj

    def _remember(self, node: dict, obj: Any) -> Any:
        n = node["id"]
        if not isinstance(n, int) or n in self.objs:
            raise ValueError(f"bad object id {n!r}")
        self.objs[n] = obj
        return obj

    def _fill_dict(self, obj: Any, items: Any) -> None:
        for k, v in items:
            obj[self(k)] = self(v)

    def __call__(self, node: Any) -> Any:
        if type(node) in _ATOMS or isinstance(node, torch.Tensor):
            return node
        if type(node) is not dict:
            raise ValueError(f"unexpected {type(node).__name__}")
        kind = node[TAG]
        if kind == "ref":
            return self.objs[node["id"]]
        if kind == "tuple":
            return tuple(self(item) for item in node["items"])
        if kind == "list":
            obj: Any = self._remember(node, [])
            obj.extend(self(item) for item in node["items"])
            return obj
        if kind in ("dict", "odict"):
            obj = self._remember(node, {} if kind == "dict" else collections.OrderedDict())
            self._fill_dict(obj, node["items"])
            return obj
        if kind == "defaultdict":
            obj = self._remember(node, collections.defaultdict())
            # the factory is called on a missing key: only a builtin container or number type may be one
            factory = self(node["factory"])
            if factory is not None and not any(factory is t for t in _BUILTIN_TYPES):
                raise ValueError(f"a defaultdict factory must be a builtin type, not {factory!r}")
            obj.default_factory = factory
            self._fill_dict(obj, node["items"])
            return obj
        if kind in ("set", "frozenset"):
            items = [self(item) for item in node["items"]]
            return self._remember(node, set(items) if kind == "set" else frozenset(items))
        if kind == "deque":
            obj = self._remember(node, collections.deque(maxlen=node["maxlen"]))
            obj.extend(self(item) for item in node["items"])
            return obj
        if kind == "device":
            return torch.device(str(node["v"]))
        if kind == "dtype":
            dtype = getattr(torch, str(node["v"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"bad dtype {node['v']!r}")
            return dtype
        if kind == "size":
            return torch.Size(int(d) for d in node["items"])
        if kind == "generator":
            gen = torch.Generator(device=str(node["device"]))
            gen.set_state(node["state"])
            return self._remember(node, gen)
        if kind == "ndarray":
            return node["v"].numpy().copy()
        if kind == "npscalar":
            return np.dtype(str(node["dtype"])).type(node["v"])
        if kind == "bytes":
            return bytes(node["v"].to(torch.uint8).tolist())
        if kind == "global":
            return self.resolve(node["name"])
        if kind == "enum":
            cls = self.resolve(node["class"])
            member = getattr(cls, str(node["name"]), None) if isinstance(cls, enum.EnumMeta) else None
            if not isinstance(member, cls):
                raise ValueError(f"bad enum member {node['name']!r}")
            return member
        if kind == "method":
            bound = getattr(self(node["self"]), str(node["name"]))
            if not isinstance(bound, types.MethodType):
                raise ValueError(f"{node['name']!r} is not a method")
            return bound
        if kind == "object":
            return self._object(node)
        raise ValueError(f"unknown node kind {kind!r}")

    def _object(self, node: dict) -> Any:
        cls = self.resolve(node["class"])
        if not isinstance(cls, type):
            raise ValueError(f"{node['class']} is not a class")
        # a namedtuple's items are its identity, so they come first
        obj = tuple.__new__(cls, [self(i) for i in node["tuple"]]) if "tuple" in node else cls.__new__(cls)
        self._remember(node, obj)
        for item in node.get("list", ()):
            obj.append(self(item))
        if "items" in node:
            self._fill_dict(obj, node["items"])
        if "state" in node:
            _set_state(obj, self(node["state"]))
        return obj


def _set_state(obj: Any, state: Any) -> None:
    """What pickle's BUILD does: ``__setstate__`` if the class has one, else ``__dict__`` and slots."""
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        obj.__dict__.update(state)
    for k, v in (slots or {}).items():
        setattr(obj, k, v)


def decode(tree: Any, *, allow: set[str] | None = None, source: str = "checkpoint") -> Any:
    """Rebuild what :func:`encode` stored. Classes and functions are resolved only from forgetless,
    torch.nn, torch.optim, collections and the names in ``allow``; anything else raises CheckpointError."""
    try:
        return _Decoder(allow or set())(tree)
    except _Refused as exc:
        raise CheckpointError(f"{source}: refuses to load '{exc.name}' ({_WHY})") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, RecursionError) as exc:
        raise CheckpointError(f"{source}: malformed checkpoint ({type(exc).__name__}: {exc}); "
                              "use --overwrite to start again") from None


# ------------------------------------------------------------------------------------------ files

def read(path: Path, template: Any = None) -> dict[str, Any]:
    """A checkpoint written by the runner, its ``"method"`` rebuilt. ``template``: the freshly built
    method of the same run, whose classes (a user's backbone, say) the checkpoint may then contain."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise CheckpointError(f"{path}: cannot read the checkpoint ({_first_line(exc)}); "
                                  "use --overwrite to start again") from None
        older = " or was written by forgetless before format 2; use --overwrite to start again"
        raise CheckpointError(f"{path}: refuses to load '{found.group(1)}' ({_WHY}{older})") from None
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(f"{path}: cannot read the checkpoint ({_first_line(exc)}); "
                              "use --overwrite to start again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "method" not in state:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: checkpoint format {found} is not supported (this forgetless writes "
                              f"{FORMAT}); use --overwrite to start again")
    allow = names_in(template) if template is not None else set()
    return {**state, "method": decode(state["method"], allow=allow, source=str(path))}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def remove_temporaries(out_dir: Path) -> list[Path]:
    """Delete the ``.NAME.XXXX.tmp`` files an atomic write leaves when the process is killed mid-write,
    in a run directory and its checkpoints folder; returns what was removed."""
    removed = []
    for folder in (Path(out_dir), Path(out_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
