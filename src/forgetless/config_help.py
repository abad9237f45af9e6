"""Help generated from the config dataclasses, so it cannot drift: every ``--set`` key of a method and every
``--bench`` key of a benchmark with its type, default, valid range and where the default comes from.

The source of a default is the field's declared ``source`` (:func:`forgetless.config.option`), else the
comment on the line that defines the field (the convention of this code base: ``lr: float = 0.05  # Table 4``),
else the comment block right above it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from functools import cache
from typing import Any

from . import config as cfg
from .errors import ConfigError, choices

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


@dataclasses.dataclass(frozen=True)
class OptionHelp:
    name: str
    type: str
    default: Any
    valid: str
    source: str
    benchmark_default: Any = UNSET  # the default after the benchmark's own (Method.defaults)


def type_name(tp: Any) -> str:
    """``int``, ``float | None``, ``tuple[int, ...]``, ``'sgd' | 'adam'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def describe(cls: type) -> list[OptionHelp]:
    """One entry per init field of config dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(OptionHelp(f.name, type_name(tp), default, _valid(f, tp, cls), f.metadata.get("source") or
                              _comment(cls, f.name)))
    return out


def _valid(f: dataclasses.Field, tp: Any, cls: type) -> str:
    literals = cfg._literals(tp)
    if literals:
        return ", ".join(str(v) for v in literals)
    bounds = cfg.field_bounds(f, tp, cls)
    if bounds is None:
        return ""
    text = bounds.describe(integer=not cfg._mentions(tp, float))
    return ("each entry: " + text) if typing.get_origin(tp) in (tuple, list) else text


def _comment(cls: type, name: str) -> str:
    """The comment of the most derived class that (re)declares ``name``."""
    for klass in cls.__mro__:
        comments = _class_comments(klass)
        if name in comments:
            return comments[name]
    return ""


@cache
def _class_comments(klass: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(klass).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    field = re.compile(r"^\s{4}(\w+)\s*:\s*[^=]+(?:=.*)?$")
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = field.match(line.split("  #")[0]) if not stripped.startswith(("def ", "@", '"')) else None
        if match and line.startswith("    ") and not line.startswith("     "):
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            out[match.group(1)] = trailing or " ".join(above)
        above = []
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "()"
    return str(value)


def table(options: list[OptionHelp]) -> str:
    rows = [("key", "type", "default", "valid", "source of the default")]
    for o in options:
        default = _fmt(o.default)
        if o.benchmark_default is not UNSET and o.benchmark_default != o.default:
            default = f"{_fmt(o.benchmark_default)} (benchmark; class default {default})"
        rows.append((o.name, o.type, default, o.valid, o.source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + ("  " + r[4] if r[4] else "")
                     for r in rows)


def method_help(name: str, benchmark: str | None = None, scenario: str = "class", data_root: str | None = None) -> str:
    """The ``--set`` keys of method ``name`` (with ``benchmark``: its defaults for that benchmark too)."""
    from . import benchmarks, methods

    if name not in methods.METHODS:
        raise ConfigError(f"unknown method {name!r}; valid: {choices(methods.METHODS)}")
    spec = methods.METHODS[name]
    options = describe(spec.cls.Config)
    title = f"{name}: {spec.description}\nscenarios: {', '.join(spec.cls.scenarios)}"
    if benchmark is not None:
        info = benchmarks.build(benchmark, scenario, 0, data_root).info()
        resolved = dataclasses.asdict(methods.resolve_config(name, info))
        options = [dataclasses.replace(o, benchmark_default=_plain(resolved[o.name])) for o in options]
        title += f"\ndefaults for {benchmark} ({scenario}-IL)"
    return f"{title}\n--set keys:\n" + table(options)


def benchmark_help(name: str) -> str:
    from . import benchmarks

    if name not in benchmarks.BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {choices(benchmarks.BENCHMARKS)}")
    spec = benchmarks.BENCHMARKS[name]
    return (f"{name}: {spec.description}\nscenarios: {', '.join(spec.scenarios)}\n--bench keys:\n"
            + table(describe(spec.options)))


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
