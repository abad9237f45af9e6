"""Typed configuration objects and parsing of ``key=value`` overrides.

Every hyperparameter container (method configs, benchmark options) is a dataclass; overrides coming
from the command line are strings and are converted with the field's annotated type, so ``--set
epochs=4`` and ``--set hidden=400,400`` both arrive with the right type, and an unknown key is a
one-line error listing the valid ones.

Ranges are declared once, on the field (``lr: float = option(1e-3, gt=0)``), and checked for every field
of every config when it is built: a method's ``validate()`` keeps only the checks that relate fields to
each other. Every float must be finite unless its field says ``finite=False``; a ``Literal`` field must
hold one of its values; bounds of a tuple/list field apply to each element. A subclass that overrides a
field's default without declaring a range (``lr: float = 0.05``) keeps the range its base class declared.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError, choices

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric field (or of each element of a tuple/list field)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and self.finite and not math.isfinite(value):
            return False
        return not ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                    or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt))

    def describe(self, integer: bool = False) -> str:
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        finite = "an integer" if integer else "a finite number" if self.finite else "a number"
        if low and high:
            return f"{finite} in {low}, {high}"
        if low:
            return f"{finite} {'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{finite} {'<=' if self.le is not None else '<'} {high[:-1]}"
        return finite


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


FINITE = Bounds()


def option(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, finite: bool = True, source: str = "",
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its valid range and, optionally, the source of its default (paper section or
    released code), for ``forgetless show``. Without ge/gt/le/lt (and with ``finite=True``) the field declares
    no range of its own: it keeps the one its base class declares, if any."""
    metadata: dict[str, Any] = {"source": source}
    if (ge, gt, le, lt) != (None, None, None, None) or not finite:
        metadata["bounds"] = Bounds(ge, gt, le, lt, finite)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_bounds(f: dataclasses.Field, tp: Any, cls: type | None = None) -> Bounds | None:
    """The bounds declared on ``f`` or, when ``f`` overrides a field of a base dataclass of ``cls`` without
    declaring any, on the nearest base that does; else FINITE for float-typed fields, else None."""
    for klass in (cls.__mro__ if cls is not None else ()):
        base = vars(klass).get("__dataclass_fields__", {}).get(f.name)
        if base is not None and "bounds" in base.metadata:
            return base.metadata["bounds"]
    declared = f.metadata.get("bounds")
    if declared is not None:
        return declared
    return FINITE if _mentions(tp, float) else None


def _mentions(tp: Any, target: type) -> bool:
    if tp is target:
        return True
    return any(_mentions(a, target) for a in typing.get_args(tp) if a is not Ellipsis)


def check_fields(obj: Any, owner: str = "") -> None:
    """Raise ConfigError for the first field of dataclass ``obj`` outside its declared range or choices."""
    types_ = field_types(type(obj))
    where = f" for {owner}" if owner else ""
    for f in dataclasses.fields(obj):
        if f.name not in types_:
            continue
        value, tp = getattr(obj, f.name), types_[f.name]
        literals = _literals(tp)
        if literals and value is not None and value not in literals:
            raise ConfigError(f"{f.name}={value!r} is not valid{where}; valid: {choices(literals)}")
        bounds = field_bounds(f, tp, type(obj))
        if bounds is None or value is None:
            continue
        items = value if isinstance(value, (tuple, list)) else [value]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not bounds.contains(item):
                shown = value if items is value else item
                each = " (each entry)" if items is value else ""
                integer = not _mentions(tp, float)
                raise ConfigError(f"{f.name}={shown!r} is out of range{where}; valid{each}: "
                                  f"{bounds.describe(integer)}{_alternatives(tp)}")


def _alternatives(tp: Any) -> str:
    """The values a union field takes besides its numbers (``int | Literal["all"] | None``: ", or all, none")."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return ""
    others = [v for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    others += ["none"] if type(None) in typing.get_args(tp) else []
    return f", or {', '.join(str(v) for v in others)}" if others else ""


def _literals(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal (or optional Literal) annotation; () for anything else."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if args and all(typing.get_origin(a) is typing.Literal for a in args):
            return tuple(v for a in args for v in typing.get_args(a))
    return ()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_kv(items: list[str] | None, flag: str) -> dict[str, str]:
    """Turn ``["a=1", "b=x"]`` into ``{"a": "1", "b": "x"}``; malformed items are a ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""})
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"bad value {value!r} for {key}")
    if origin is typing.Literal:
        for lit in args:
            if value == lit or str(value) == str(lit):
                return lit
        raise ConfigError(f"{key}={value!r} is not valid; valid: {choices(args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p != ""]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]
        inner = args[0] if args else str
        converted = [_convert(p, inner, key) for p in parts]
        return tuple(converted) if origin is tuple else converted
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f"{key} expects a mapping (use a YAML config for it), got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{key}={value!r} is not a boolean; valid: true, false")
    if tp in (int, float, str):
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}={value!r} is not an integer")
        try:
            if tp is int and isinstance(value, str):
                number = float(value)  # accepts "1e5" for integers too
                if not number.is_integer():
                    raise ValueError
                return int(number)
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a valid {tp.__name__}") from None
    return value


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def build(cls: type[T], overrides: Mapping[str, Any] | None = None, what: str = "option", owner: str = "") -> T:
    """Instantiate dataclass ``cls`` with ``overrides`` converted to the annotated field types."""
    types_ = field_types(cls)
    kwargs = {}
    for key, value in (overrides or {}).items():
        if key not in types_:
            where = f" for {owner}" if owner else ""
            raise ConfigError(f"unknown {what} {key!r}{where}; valid: {choices(types_)}")
        kwargs[key] = _convert(value, types_[key], key)
    obj = cls(**kwargs)
    check_fields(obj, owner)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
