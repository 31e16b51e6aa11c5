"""One registry per kind of pluggable thing: edit methods and recovery attacks.

The shape of rome's ``ALG_DICT`` (kmeng01/rome ``experiments/evaluate.py``: name → (hyper-parameter class, apply
function)), without its module-level caches: a method module registers ``(name, ConfigClass, function)`` with a
`Spec` of what it supports, and the stages, the CLI, the YAML validation and the tests read the registry. Nothing
else lists methods by hand, so adding a method is adding one file to the stage's package.

The core never imports a stage package statically: a registry names the package it collects from and imports that
package's modules the first time it is read (each module registers itself at import).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from obliviate.config.loader import ConfigError, InvalidField, from_dict


@dataclass(frozen=True)
class Knob:
    """A method's strength knob: one numeric field of its config, searched by the edit stage's operating point.

    `low` < `high` is the default range; `stronger` says which end forgets more. The search assumes forgetting is
    monotone in the knob (more strength, less forget recall) and says so in its record.
    """

    field: str
    """Name of the config field the knob sets."""
    low: float
    high: float
    stronger: Literal["higher", "lower"] = "higher"
    scale: Literal["log", "linear"] = "log"
    """log: bisect geometrically (the range must not contain 0); linear: arithmetically."""
    integer: bool = False
    """The field is an int: values are rounded, and the search stops when the bracket has no integer inside."""
    doc: str = ""
    """What the knob is, in words (shown in the search record and the report)."""

    def check_range(self, low: Any, high: Any, where: str) -> tuple[float, float]:
        """(low, high) as floats, or a ConfigError naming `where` when the range cannot be searched."""
        for value in (low, high):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidField(where, f"{value!r} is not a finite number; give [low, high].")
        if low == high or (self.integer and math.floor(high) < math.ceil(low)):
            raise InvalidField(where, f"the range [{low}, {high}] is empty; give low < high.")
        if low > high:
            raise InvalidField(where, f"the range [{low}, {high}] is reversed; give low < high (the knob "
                                      f"{self.field!r} is stronger when {self.stronger}).")
        if self.scale == "log" and low * high <= 0:
            raise InvalidField(where, f"{self.field!r} is searched on a log scale; the range [{low}, {high}] must "
                                      f"not contain 0.")
        return float(low), float(high)

    def value(self, x: float) -> float | int:
        return int(round(x)) if self.integer else float(x)

    def apply(self, cfg: Any, x: float) -> Any:
        """A copy of `cfg` with the knob set to `x` (the config's own validation runs again)."""
        new = dataclasses.replace(cfg, **{self.field: self.value(x)})
        validate = getattr(new, "validate", None)
        if callable(validate):
            validate()
        return new

    def midpoint(self, a: float, b: float) -> float:
        if self.scale == "log":
            sign = 1.0 if a > 0 else -1.0
            return sign * math.sqrt(abs(a) * abs(b))
        return (a + b) / 2

    def ends(self, low: float, high: float) -> tuple[float, float]:
        """(weakest, strongest) of a range."""
        return (low, high) if self.stronger == "higher" else (high, low)


@dataclass(frozen=True)
class Spec:
    """What a registered edit method supports; the stage and the YAML validation check requests against it."""

    goals: tuple[str, ...] = ("erase",)
    """Goals the method honours (erase, rewrite)."""
    layers: Literal["any", "one", "range", "none"] = "any"
    """Explicit layers: any set, exactly one, a contiguous range, or none (the method has no layer to choose)."""
    proposal: Literal["mlp_peak", "signature"] | None = None
    """Which locate proposal the method takes when no layers are given: the MLP peak, the memorisation signature's
    depths, or none (the method's own default)."""
    knob: Knob | None = None
    """The strength knob the operating-point search turns; None: the method is evaluated at its configuration."""


@dataclass(frozen=True)
class Entry:
    """One registered method or attack."""

    name: str
    config: type
    """Its config dataclass (attribute docstrings are its documentation; `validate()` runs when built)."""
    function: Callable[..., Any]
    spec: Spec = field(default_factory=Spec)
    needs: tuple[str, ...] = ()
    """Attacks: extra inputs the stage must bind (e.g. "sae", "oracle"). Edits: the kind of base the method needs
    beyond an ordinary model (e.g. "adapted_model": a folder with a removable adapter)."""

    @property
    def doc(self) -> str:
        return (self.function.__doc__ or "").strip().split("\n")[0]

    def params(self, data: Mapping[str, Any] | None = None, *, where: str = "params") -> Any:
        """The config dataclass built strictly from `data` (unknown keys and bad values name their key path)."""
        return from_dict(self.config, dict(data or {}), where=where)

    def check_request(self, goal: str | None, layers: Sequence[int] | None) -> None:
        """A ValueError naming the method and what it supports when it cannot honour `goal` or `layers`."""
        spec = self.spec
        if goal is not None and goal not in spec.goals:
            raise ValueError(f"{self.name} supports goal {' or '.join(spec.goals)}, not {goal!r}.")
        if not layers:
            return
        if spec.layers == "none":
            raise ValueError(f"{self.name} has no layer to choose (it acts where it is defined); remove 'layers'.")
        if spec.layers == "one" and len(layers) != 1:
            raise ValueError(f"{self.name} edits exactly one layer; got {list(layers)}.")
        ordered = sorted(layers)
        if spec.layers == "range" and ordered != list(range(ordered[0], ordered[-1] + 1)):
            raise ValueError(f"{self.name} edits a contiguous range of layers; got {list(layers)}.")


class Registry:
    """name → Entry for one kind of thing, collected from the modules of one package."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str, config: type, *, spec: Spec | None = None, needs: Sequence[str] = ()
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the function under `name` with its config dataclass."""
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{self.kind} {name!r}: its config must be a dataclass, got {config!r}.")
        if spec is not None and spec.knob is not None and spec.knob.field not in \
                {f.name for f in dataclasses.fields(config)}:
            raise TypeError(f"{self.kind} {name!r}: knob field {spec.knob.field!r} is not a field of "
                            f"{config.__name__}.")

        def add(function: Callable[..., Any]) -> Callable[..., Any]:
            known = self._entries.get(name)
            if known is not None and known.function.__qualname__ != function.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({known.function.__module__} and "
                                 f"{function.__module__}).")
            self._entries[name] = Entry(name, config, function, spec or Spec(), tuple(needs))
            return function

        return add

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(sorted(self._entries))

    def get(self, name: str) -> Entry:
        """The entry, or a ConfigError that lists the registered names."""
        self._discover()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}.")
        return self._entries[name]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.get(name) for name in self.names())

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries


EDITS = Registry("edit method", "edit")
"""Edit methods: function(handle, edit.result.EditRequest, config) → edit.result.EditResult."""

ATTACKS = Registry("attack", "audit")
"""Recovery attacks: function(base, handle, targets, config, context) → audit.attack_result.AttackResult."""
