"""Declared per-field ranges (``config.option``): every bound of every method and benchmark config is enforced
with a one-line message, the defaults satisfy them, and no ``validate()`` re-checks a single field's range."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path
from typing import Literal

import pytest

import forgetless
from forgetless import benchmarks, config, methods
from forgetless.benchmarks import BenchmarkInfo
from forgetless.config import Bounds, check_fields, field_bounds, option
from forgetless.errors import ConfigError

CONFIGS = sorted({(f"method {name}", spec.cls.Config) for name, spec in methods.METHODS.items()}
                 | {(f"benchmark {name}", spec.options) for name, spec in benchmarks.BENCHMARKS.items()},
                 key=lambda item: item[0])


def _bounded_fields(cls: type):
    """(field, annotation, bounds, integer) for every init field of ``cls`` that has bounds."""
    types_ = config.field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name not in types_:
            continue
        bounds = field_bounds(f, types_[f.name], cls)
        if bounds is not None:
            yield f, types_[f.name], bounds, not config._mentions(types_[f.name], float)


def _outside(bounds: Bounds, integer: bool) -> list[float]:
    """Values just outside each declared end of ``bounds``, plus nan and +-inf for finite floats."""
    out: list[float] = []
    if bounds.ge is not None:
        out.append(bounds.ge - 1 if integer else math.nextafter(bounds.ge, -math.inf))
    if bounds.gt is not None:
        out.append(bounds.gt)
    if bounds.le is not None:
        out.append(bounds.le + 1 if integer else math.nextafter(bounds.le, math.inf))
    if bounds.lt is not None:
        out.append(bounds.lt)
    if not integer and bounds.finite:
        out += [math.nan, math.inf, -math.inf]
    return [int(v) for v in out] if integer else out


def _value(f: dataclasses.Field, bad: float):
    """``bad`` in the shape of the field: one entry of a tuple/list field replaced, else the value itself."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if isinstance(default, (tuple, list)):
        return type(default)([bad, *default[1:]]) if default else type(default)([bad])
    return bad


def _cases():
    for owner, cls in CONFIGS:
        for f, _, bounds, integer in _bounded_fields(cls):
            for bad in _outside(bounds, integer):
                yield pytest.param(owner, cls, f, bounds, integer, bad, id=f"{owner}.{f.name}={bad}")


CASES = list(_cases())


def test_the_walk_covers_the_declared_bounds():
    assert len(CASES) > 150
    names = {(owner, f.name) for owner, _, f, *_ in (c.values for c in CASES)}
    for expected in [("method hat", "smax"), ("method hat", "lr"), ("method icarl", "buffer_size"),
                     ("method hnet-tir", "vae_beta"), ("method spacenet", "selected"), ("method dgma", "s_max"),
                     ("benchmark toy-regression", "n_tasks"), ("benchmark domain-chain", "test_fraction")]:
        assert expected in names


@pytest.mark.parametrize(("owner", "cls", "f", "bounds", "integer", "bad"), CASES)
def test_a_value_just_outside_a_declared_range_is_a_one_line_error(owner, cls, f, bounds, integer, bad):
    name = owner.split()[1]
    with pytest.raises(ConfigError) as err:
        config.build(cls, {f.name: _value(f, bad)}, owner=name)
    message = str(err.value)
    assert message.startswith(f"{f.name}="), message
    assert f"out of range for {name}; valid" in message and bounds.describe(integer) in message, message
    assert "\n" not in message


def _infos():
    shapes = {"split-mnist": ((1, 28, 28), 10, 5), "permuted-mnist": ((1, 32, 32), 10, 10),
              "split-cifar10": ((3, 32, 32), 10, 5), "toy-regression": ((1,), 1, 3)}
    for name, (shape, classes, n_tasks) in shapes.items():
        kind = "regression" if name == "toy-regression" else "classification"
        for scenario in ("task", "domain", "class"):
            per = classes // n_tasks if scenario != "domain" else classes
            labels = tuple(tuple(range(t * per, (t + 1) * per)) if scenario != "domain" else tuple(range(per))
                           for t in range(n_tasks)) if kind == "classification" else ((0,),) * n_tasks
            outputs = max(max(t) for t in labels) + 1
            yield BenchmarkInfo(name, scenario, n_tasks, shape, outputs, labels, kind=kind, dataset=name)


@pytest.mark.parametrize(("owner", "cls"), CONFIGS, ids=[owner for owner, _ in CONFIGS])
def test_defaults_pass_the_declared_ranges(owner, cls):
    obj = cls()
    check_fields(obj, owner)
    if callable(getattr(obj, "validate", None)):
        obj.validate()


def test_per_benchmark_method_defaults_pass_the_declared_ranges():
    checked = 0
    for name, spec in methods.METHODS.items():
        for info in _infos():
            if info.scenario not in spec.cls.scenarios:
                continue
            try:
                cfg = methods.resolve_config(name, info)
            except ConfigError as exc:  # a combination the method refuses for another reason is not our concern
                assert "out of range" not in str(exc) and "is not valid" not in str(exc), (name, info.name, exc)
                continue
            check_fields(cfg, name)
            checked += 1
    assert checked > 50


# ------------------------------------------------------------------------------ no single-field range checks

_RANGE_OPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _is_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_constant(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return True  # len(TASKS): a module-level constant
    return isinstance(node, ast.Constant) or (isinstance(node, ast.Name) and node.id.isupper())


def _attribute(node: ast.AST) -> str | None:
    """``X`` for ``self.X``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _single_field_check(node: ast.AST) -> str | None:
    """The field name when ``node`` compares one ``self.X`` with constants only: a range (``self.x < 1``,
    ``0 <= self.x < 1``), a choice (``self.x not in (...)``) or an entry range (``any(v < 0 for v in self.x)``)."""
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        node = node.operand
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        fields = [_attribute(o) for o in operands if _attribute(o)]
        rest = [o for o in operands if not _attribute(o)]
        choice = all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
        if len(set(fields)) == 1 and all(_is_constant(o) for o in rest) and rest and (
                all(isinstance(op, _RANGE_OPS) for op in node.ops) or choice):
            return fields[0]
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("any", "all") \
            and len(node.args) == 1 and isinstance(node.args[0], ast.GeneratorExp):
        gen = node.args[0]
        if len(gen.generators) == 1 and _attribute(gen.generators[0].iter) and isinstance(gen.elt, (ast.Compare,
                                                                                                    ast.UnaryOp)):
            inner = gen.elt.operand if isinstance(gen.elt, ast.UnaryOp) else gen.elt
            if isinstance(inner, ast.Compare) and all(_is_constant(c) or isinstance(c, ast.Name)
                                                      for c in [inner.left, *inner.comparators]):
                return _attribute(gen.generators[0].iter)
    return None


def _is_none_guard(node: ast.AST) -> str | None:
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.IsNot) \
            and isinstance(node.comparators[0], ast.Constant) and node.comparators[0].value is None:
        return _attribute(node.left)
    return None


def _flagged(test: ast.AST) -> bool:
    if _single_field_check(test):
        return True
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return all(_flagged(v) for v in test.values)
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):  # self.x is not None and self.x < 1
        checked = [_single_field_check(v) for v in test.values]
        guards = [_is_none_guard(v) for v in test.values]
        names = set(filter(None, checked + guards))
        return all(c or g for c, g in zip(checked, guards, strict=True)) and len(names) == 1
    return False


def single_field_range_checks(source: str, filename: str = "<source>") -> list[str]:
    """``file:line`` of every ``if <single-field range or choice check>: raise`` inside a ``validate*`` method."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("validate")):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.If) and any(isinstance(s, ast.Raise) for s in node.body) and _flagged(node.test):
                found.append(f"{filename}:{node.lineno}")
    return found


def test_the_static_check_flags_single_field_ranges_and_spares_relations():
    flagged = '''
class C:
    def validate(self):
        if self.smax <= 1:
            raise E
        if not 0 <= self.relevance_threshold < 1:
            raise E
        if self.reg_tasks is not None and self.reg_tasks < 1:
            raise E
        if self.lamb < 0 or self.clamp <= 0:
            raise E
        if any(c < 0 for c in self.connections):
            raise E
        if self.memory not in MEMORIES:
            raise E
        if not 1 <= self.n_tasks <= len(TASKS):
            raise E
'''
    spared = '''
class C:
    def validate(self):
        if self.epochs < 1 and not self.iterations:
            raise E
        if self.memory == "episodic" and self.buffer_size == 0:
            raise E
        if self.mask_init == "constant" and not self.mask_scale > self.threshold:
            raise E
        if self.image_size % 8:
            raise E
        if len(self.learn_k) != 4:
            raise E
        if self.smax <= 1:
            self.smax = 2
    def learn(self):
        if self.smax <= 1:
            raise E
'''
    assert len(single_field_range_checks(flagged)) == 7
    assert single_field_range_checks(spared) == []


def test_no_validate_method_checks_a_single_field_range():
    root = Path(forgetless.__file__).parent
    found = [hit for path in sorted(root.rglob("*.py"))
             for hit in single_field_range_checks(path.read_text(), str(path.relative_to(root)))]
    assert found == [], f"declare these ranges on the field with config.option: {found}"


# ------------------------------------------------------------------------------------------- unit tests

@pytest.mark.parametrize(("bounds", "integer", "text"), [
    (Bounds(ge=0), True, "an integer >= 0"),
    (Bounds(gt=1), False, "a finite number > 1"),
    (Bounds(le=0.5), False, "a finite number <= 0.5"),
    (Bounds(lt=1e-20), False, "a finite number < 1e-20"),
    (Bounds(ge=0, lt=1), False, "a finite number in [0, 1)"),
    (Bounds(gt=0, le=1), False, "a finite number in (0, 1]"),
    (Bounds(ge=1, le=3), True, "an integer in [1, 3]"),
    (Bounds(), False, "a finite number"),
    (Bounds(gt=0, finite=False), False, "a number > 0"),
])
def test_bounds_describe(bounds, integer, text):
    assert bounds.describe(integer) == text


def test_bounds_contains():
    assert Bounds(ge=0, lt=1).contains(0) and not Bounds(ge=0, lt=1).contains(1)
    assert not Bounds().contains(math.nan) and not Bounds().contains(math.inf)
    assert Bounds(finite=False).contains(math.inf) and not Bounds(finite=False, lt=0).contains(math.inf)


@dataclasses.dataclass
class _Sample:
    count: int = option(3, ge=1)
    rate: float = option(0.5, gt=0, lt=1, source="Table 1")
    plain: float = 1.0
    sizes: tuple[int, ...] = option((4, 4), ge=1)
    kind: Literal["a", "b"] = "a"
    maybe: int | None = option(None, ge=0)
    budget: int | Literal["all"] = option("all", ge=1)
    label: Literal["x", "y"] | None = None
    loose: float = option(1.0, finite=False)


@dataclasses.dataclass
class _Child(_Sample):
    count: int = 5  # keeps the base's range
    rate: float = option(0.9, ge=0, le=1)  # declares its own
    plain: float = option(2.0, source="somewhere")  # a source only: no range of its own


def _message(obj, owner: str = "sample") -> str:
    with pytest.raises(ConfigError) as err:
        check_fields(obj, owner)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_check_fields_messages():
    check_fields(_Sample(), "sample")
    check_fields(_Sample(maybe=0, budget=1, label="y", loose=math.inf))
    assert _message(_Sample(count=0)) == "count=0 is out of range for sample; valid: an integer >= 1"
    assert _message(_Sample(rate=1.0)) == "rate=1.0 is out of range for sample; valid: a finite number in (0, 1)"
    assert _message(_Sample(plain=math.nan)) == "plain=nan is out of range for sample; valid: a finite number"
    assert _message(_Sample(sizes=(4, 0))) == "sizes=(4, 0) is out of range for sample; valid (each entry): " \
                                              "an integer >= 1"
    assert _message(_Sample(kind="c")) == "kind='c' is not valid for sample; valid: a, b"
    assert _message(_Sample(maybe=-1)) == "maybe=-1 is out of range for sample; valid: an integer >= 0, or none"
    assert _message(_Sample(budget=0)) == "budget=0 is out of range for sample; valid: an integer >= 1, or all"
    assert _message(_Sample(label="z")) == "label='z' is not valid for sample; valid: x, y"
    assert _message(_Sample(count=0), owner="") == "count=0 is out of range; valid: an integer >= 1"


def test_a_subclass_override_keeps_or_replaces_the_base_range():
    check_fields(_Child())
    assert _message(_Child(count=0)) == "count=0 is out of range for sample; valid: an integer >= 1"
    check_fields(_Child(rate=1.0))  # the child's [0, 1] replaces the base's (0, 1)
    assert _message(_Child(rate=1.5)) == "rate=1.5 is out of range for sample; valid: a finite number in [0, 1]"
    assert _message(_Child(plain=math.inf)) == "plain=inf is out of range for sample; valid: a finite number"
    fields = {f.name: f for f in dataclasses.fields(_Child)}
    assert "bounds" not in fields["plain"].metadata and fields["plain"].metadata["source"] == "somewhere"
    assert {f.name: f for f in dataclasses.fields(_Sample)}["rate"].metadata["source"] == "Table 1"


def test_build_converts_then_checks():
    assert config.build(_Sample, {"count": "2", "sizes": "1,2", "budget": "all"}).sizes == (1, 2)
    with pytest.raises(ConfigError, match=r"^sizes=\(1, 0\) is out of range for s; valid \(each entry\)"):
        config.build(_Sample, {"sizes": "1,0"}, owner="s")
    with pytest.raises(ConfigError, match=r"^rate=inf is out of range"):
        config.build(_Sample, {"rate": "inf"})
