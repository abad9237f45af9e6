"""Typed configuration objects and parsing of ``key=value`` overrides.

Every hyperparameter container (method configs, benchmark options) is a dataclass; overrides coming
from the command line are strings and are converted with the field's annotated type, so ``--set
epochs=4`` and ``--set hidden=400,400`` both arrive with the right type, and an unknown key is a
one-line error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError, choices

T = TypeVar("T")

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
