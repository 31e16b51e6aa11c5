"""Strict YAML → dataclass loading: an unknown key, a wrong type or a bad choice is an error naming the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is wrong; the message names the dotted field path and what is allowed."""


class InvalidField(ConfigError):
    """Raised by a config's validate(): names the field locally; from_dict adds the path above it."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"config field '{field}': {problem}")


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
    unknown = sorted(set(data) - set(fields))
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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML ({error}).") from error
    return from_dict(cls, data)


def to_dict(instance: Any) -> dict[str, Any]:
    return dataclasses.asdict(instance)
