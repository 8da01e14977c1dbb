"""The one validator of config dicts.

Every config in apical (a training run, a rule's options, the segregated-dendrite network,
the spiking simulations) is a dataclass whose fields carry their type and, where a value
can be out of range, a `Range` in an `Annotated` hint:

    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9

`from_dict(cls, data)` builds one from a dict (a TOML table, JSON, the command line):
an unknown key is named with the valid ones, a value of the wrong type or out of range is
named with what it must be, and nested dataclasses are built from nested dicts (or dotted
keys, "rule.tau_avg"). `check_fields(obj)` checks a dataclass built directly. Both raise
`ConfigError` with one line; nothing is coerced silently except what is lossless: an
integer where a float is wanted, an integral float where an integer is wanted, a list
where a tuple is wanted. Booleans are never numbers, and floats must be finite.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from apical.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ge/gt (>=, >) below, le/lt (<=, <) above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, v: float) -> bool:
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )

    def describe(self, noun: str = "number") -> str:
        """'a positive number', 'an integer >= 1', 'a number in [0, 1)', ..."""
        bounds = (self.ge, self.gt, self.le, self.lt)
        if bounds == (None, 0, None, None):
            return f"a positive {noun}"
        if bounds == (0, None, None, None):
            return f"a non-negative {noun}"
        article = "an" if noun[0] in "aeiou" else "a"
        low = f"[{_num(self.ge)}" if self.ge is not None else ""
        low = low or (f"({_num(self.gt)}" if self.gt is not None else "")
        high = f"{_num(self.le)}]" if self.le is not None else ""
        high = high or (f"{_num(self.lt)})" if self.lt is not None else "")
        if low and high:
            return f"{article} {noun} in {low}, {high}"
        below = f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        above = f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return f"{article} {noun} {below if low else above}"


POSITIVE = Range(gt=0)
NON_NEGATIVE = Range(ge=0)
AT_LEAST_ONE = Range(ge=1)


def _fields(cls: type) -> tuple[list[dataclasses.Field], dict[str, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [f for f in dataclasses.fields(cls) if f.init], hints


def from_dict(cls: type[T], data: Any, name: str = "config", path: str = "") -> T:
    """`cls(**data)` with every key known and every value of its field's type and range.

    `name` says what the keys are in messages ("config", "rule 'fa' option", ...); `path`
    prefixes the keys of a nested table ("feedback.")."""
    if not isinstance(data, dict):
        raise ConfigError(f"{name}s must be a table of KEY = VALUE, got {_show(data)}")
    fields, hints = _fields(cls)
    known = {f.name for f in fields}
    nested: dict[str, Any] = {}
    for key, value in data.items():
        head, dot, rest = str(key).partition(".")
        if dot and head in known and dataclasses.is_dataclass(_plain(hints[head])):
            nested.setdefault(head, {})[rest] = value
        else:
            nested[key] = value
    unknown = sorted(_key(path + str(k)) for k in nested if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown {name} key {', '.join(unknown)}; known keys: "
            f"{', '.join(path + k for k in sorted(known))}"
        )
    required = [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    missing = [path + k for k in required if k not in nested]
    if missing:
        raise ConfigError(f"{name} lacks the key {', '.join(missing)}, which it needs")
    return cls(**{k: coerce(v, hints[k], path + k, name) for k, v in nested.items()})


def replace(obj: T, overrides: dict[str, Any], name: str = "config") -> T:
    """`obj` with `overrides` (dotted keys reach nested dataclasses), validated."""
    base = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    merged = dict(base)
    for key, value in overrides.items():
        head, dot, rest = str(key).partition(".")
        if dot and head in base and dataclasses.is_dataclass(base[head]):
            merged[head] = replace(merged[head], {rest: value}, f"{name} {head}")
        else:
            merged[key] = value
    return from_dict(type(obj), merged, name)


def check_arguments(fn: Any, options: dict[str, Any], name: str) -> dict[str, Any]:
    """Keyword `options` of the function `fn` checked like config fields: each must be one
    of its parameters with a default, of the type and range its annotation gives."""
    params = dict(inspect.signature(fn).parameters)
    hints = typing.get_type_hints(fn, include_extras=True)
    keywords = [k for k, p in params.items() if p.default is not inspect.Parameter.empty]
    unknown = sorted(k for k in options if k not in keywords)
    if unknown:
        raise ConfigError(
            f"unknown {name} {', '.join(unknown)}; known: {', '.join(keywords) or 'none'}"
        )
    return {k: coerce(v, hints.get(k, Any), k) for k, v in options.items()}


def check_fields(obj: Any) -> None:
    """Check every field of a dataclass built directly against its type and range."""
    fields, hints = _fields(type(obj))
    for f in fields:
        coerce(getattr(obj, f.name), hints[f.name], f.name)


def coerce(value: Any, hint: Any, name: str, what: str = "config") -> Any:
    """`value` as the type `hint` describes (lossless conversions only), or ConfigError
    naming the key `name` (dotted for nested tables)."""
    table = _plain(hint)
    if dataclasses.is_dataclass(table) and isinstance(value, dict):
        return from_dict(table, value, what, path=f"{name}.")
    problem = _problem(value, hint)
    if isinstance(problem, _Bad):
        raise ConfigError(f"{name} must be {problem.want}, got {_show(value)}")
    return problem


@dataclass(frozen=True)
class _Bad:
    want: str


def _plain(hint: Any) -> Any:
    """The hint without Annotated and without None in a union."""
    if get_origin(hint) is Annotated:
        return _plain(get_args(hint)[0])
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return _plain(rest[0]) if len(rest) == 1 else hint
    return hint


def _problem(value: Any, hint: Any) -> Any:
    """The converted value, or _Bad(what it must be)."""
    if hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        base, *extras = args
        out = _problem(value, base)
        if isinstance(out, _Bad):
            return out
        for extra in extras:
            if isinstance(extra, Range) and not extra.holds(out):
                return _Bad(extra.describe(_noun(base)))
        return out
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        # a value of one member's type is judged as that type only (a fraction 1.0 is not
        # the count 1); other values may convert to any member
        exact = [a for a in members if _exact(value, a)]
        for member in exact or members:
            out = _problem(value, member)
            if not isinstance(out, _Bad):
                return out
        if len(exact) == 1:  # of the right type but out of range: say why
            return _problem(value, exact[0])
        wants = [_describe(a) for a in members] + (["none"] if type(None) in args else [])
        return _Bad(" or ".join(wants))
    if hint is type(None):
        return None if value is None else _Bad("none")
    if origin is Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
        return value if ok else _Bad(_describe(hint))
    if hint is bool:
        return value if isinstance(value, bool) else _Bad("true or false")
    if hint is int:
        if isinstance(value, bool):
            return _Bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return _Bad("an integer")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _Bad("a number")
        if not math.isfinite(value):
            return _Bad("a finite number")
        return float(value)
    if hint is str:
        return value if isinstance(value, str) else _Bad("a string")
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return _Bad(_describe(hint))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_hints = [args[0]] * len(value)
        elif origin is tuple:
            if len(value) != len(args):
                return _Bad(_describe(hint))
            item_hints = list(args)
        else:
            item_hints = [args[0] if args else Any] * len(value)
        items = [_problem(v, h) for v, h in zip(value, item_hints, strict=True)]
        bad = next((i for i in items if isinstance(i, _Bad)), None)
        if bad is not None:
            return _Bad(f"{_describe(hint)} (each {bad.want})")
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return _Bad("a table of KEY = VALUE")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            check_fields(value)
            return value
        if isinstance(value, dict):
            return from_dict(hint, value, f"{hint.__name__}")
        return _Bad(f"a table of {hint.__name__} fields")
    raise TypeError(f"apical.config cannot check values of type {hint!r}")  # a bug, not input


def _exact(value: Any, hint: Any) -> bool:
    """Whether `value` already is of the hint's type (no conversion needed)."""
    plain = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    if plain in (int, float):
        return type(value) is plain
    origin = get_origin(plain) or plain
    return isinstance(origin, type) and isinstance(value, origin)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        ranges = [e for e in args[1:] if isinstance(e, Range)]
        return ranges[0].describe(_noun(args[0])) if ranges else _describe(args[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", str(hint))


def _key(k: str) -> str:
    """A key as a message shows it: plain names as they are, anything else quoted."""
    return k if k and all(c.isalnum() or c in "_.-" for c in k) else repr(k)


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _noun(hint: Any) -> str:
    return "integer" if hint is int else "number"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
