"""Strict YAML → dataclass loading: an unknown key, a wrong type or a bad choice is an error naming the field."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from obliviate.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config value is wrong; the message names the dotted field path and what is allowed."""


class InvalidField(ConfigError):
    """Raised by a config's validate(): names the field locally; from_dict adds the path above it."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"config field '{field}': {problem}")


def check_range(field: str, value: float | None, *, minimum: float | None = None, maximum: float | None = None,
                below: float | None = None, fix: str = "") -> None:
    """Raise InvalidField unless `value` is None or a finite number in [minimum, maximum] (and < `below`)."""
    if value is None:
        return
    bounds = [f"≥ {minimum}" if minimum is not None else "", f"≤ {maximum}" if maximum is not None else "",
              f"< {below}" if below is not None else ""]
    wanted = " and ".join(b for b in bounds if b) or "finite"
    if not math.isfinite(value) or (minimum is not None and value < minimum) or \
            (maximum is not None and value > maximum) or (below is not None and value >= below):
        raise InvalidField(field, f"{value!r} is out of range; use a number {wanted}{'. ' + fix if fix else '.'}")


def _choices(kind: Any) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) type allows, None included; None for other types."""
    if get_origin(kind) is Literal:
        return get_args(kind)
    if get_origin(kind) in (typing.Union, types.UnionType):
        literals = [option for option in get_args(kind) if get_origin(option) is Literal]
        if literals and all(o is type(None) or get_origin(o) is Literal for o in get_args(kind)):
            return tuple(v for option in literals for v in get_args(option)) + \
                ((None,) if type(None) in get_args(kind) else ())
    return None


def check_choices(instance: Any) -> None:
    """Raise InvalidField for the first `Literal`-typed field of dataclass `instance` whose value is not one of its
    choices: what `from_dict` refuses when a YAML is loaded, for configs built in code (a config's validate())."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        choices = _choices(hints[f.name])
        value = getattr(instance, f.name)
        if choices is not None and value not in choices:
            raise InvalidField(f.name, f"{value!r} is not one of {[c for c in choices if c is not None]}.")


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        present = [option for option in options if option is not type(None)]
        if len(present) == 1:  # `X | None`: X's own error names the inner key path
            return _coerce(value, present[0], where)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"config field '{where}': {value!r} fits none of {_type_name(kind)}.")
    if origin is Literal:
        if value not in get_args(kind):
            raise ConfigError(f"config field '{where}': {value!r} is not one of {list(get_args(kind))}.")
        return value
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}': expected a mapping of {kind.__name__} fields.")
        return from_dict(kind, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{where}': expected a list, got {value!r}.")
        (item_kind, *_) = get_args(kind) or (Any,)
        items = [_coerce(v, item_kind, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}': expected a mapping, got {value!r}.")
        return dict(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"config field '{where}': expected {kind.__name__}, got {value!r}.")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config{' ' + where if where else ''}: expected a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # YAML keys may be numbers, booleans or null (`1: x`, `yes: x`); name them as written, never compare them
    unknown = sorted((str(key) for key in set(data) - set(fields)), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"config: unknown key '{prefix}{unknown[0]}'. Known keys of {cls.__name__}: "
                          f"{', '.join(sorted(fields))}.")
    values = {name: _coerce(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except InvalidField as error:
            raise ConfigError(f"config field '{where + '.' if where else ''}{error.field}': {error.problem}") from None
    return instance


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass `cls`, strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; see configs/ for examples.")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    except (yaml.YAMLError, RecursionError) as error:
        # one line: the CLI prints user errors without a traceback, and YAML's own message spans several
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"config file {path}: not valid YAML ({detail}).") from None
    return from_dict(cls, data)


def to_dict(instance: Any) -> dict[str, Any]:
    return dataclasses.asdict(instance)
