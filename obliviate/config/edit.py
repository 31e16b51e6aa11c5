"""Config of the edit stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from obliviate.config.loader import InvalidField, check_range

@dataclass
class EditConfig:
    method: str = "memit"
    """Edit method: a name registered in obliviate.registry.EDITS (`obliviate methods` lists them)."""
    name: str | None = None
    """Name of this edit in the run folder (default: the method name)."""
    goal: Literal["erase", "rewrite"] = "erase"
    """erase: push the true answer down; rewrite: make target_new the answer."""
    layers: list[int] | None = None
    """Layers to edit; None takes them from the locate stage's proposal."""
    params: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters, validated by the method's own config dataclass (unknown keys are errors)."""

    def validate(self) -> None:
        from obliviate.registry import EDITS

        if self.method not in EDITS:
            raise InvalidField("method", f"unknown method {self.method!r}; registered: {', '.join(EDITS.names())}.")
        for i, layer in enumerate(self.layers or []):
            check_range(f"layers[{i}]", layer, minimum=0, fix="layers count from 0")
        if self.layers is not None and not self.layers:
            raise InvalidField("layers", "is empty; give layer numbers, or null to take locate's proposal.")
        try:
            EDITS.get(self.method).check_request(None, self.layers)
        except ValueError as error:
            raise InvalidField("layers", str(error)) from None
        try:
            EDITS.get(self.method).check_request(self.goal, None)
        except ValueError as error:
            raise InvalidField("goal", str(error)) from None

    @property
    def label(self) -> str:
        return self.name or self.method
