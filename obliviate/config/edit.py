"""Config of the edit stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from obliviate.config.loader import InvalidField, check_range

@dataclass
class EditConfig:
    method: str = "memit"
    """Edit method: a name registered in obliviate.registry.EDITS (an unknown name lists them)."""
    name: str | None = None
    """Name of this edit in the run folder (default: the method name)."""
    goal: Literal["erase", "rewrite"] = "erase"
    """erase: push the true answer down; rewrite: make target_new the answer."""
    layers: list[int] | None = None
    """Layers to edit; None takes them from the locate stage's proposal."""
    params: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters, validated by the method's own config dataclass (unknown keys are errors)."""
    knob_range: list[float] | None = None
    """[low, high] of the method's strength knob for the operating-point search (None: the method's default)."""
    search: bool = True
    """False: run at `params` even when the run sets an `operating_point` (e.g. lora_removal's full removal: the
    exact method the searched ones are compared with, which a search would stop at the weakest partial removal)."""

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
        if self.knob_range is not None and not self.search:
            raise InvalidField("knob_range", "is set but search is false; drop one of the two.")
        if self.knob_range is not None:
            knob = EDITS.get(self.method).spec.knob
            if knob is None:
                raise InvalidField("knob_range", f"{self.method} has no strength knob to search.")
            if len(self.knob_range) != 2:
                raise InvalidField("knob_range", f"{self.knob_range!r}: give [low, high].")
            knob.check_range(*self.knob_range, where="knob_range")

    @property
    def label(self) -> str:
        return self.name or self.method


@dataclass
class OperatingPoint:
    """Compare methods at the same forgetting: each edit's knob is searched to reach this forget recall."""

    forget_recall: float | str = "oracle+0.05"
    """Target forget recall: a number in [0, 1], or 'oracle+δ' (the never-learned audit.reference's own forget
    recall on the targets, plus δ)."""
    max_retain_drop: float = 0.05
    """Largest loss of retain recall (base minus edited) a setting may cost; beyond it the method 'does not reach'."""
    max_evaluations: int = 8
    """Knob settings evaluated per method at most (each is one edit and one measurement)."""
    attacks: list[str] = field(default_factory=list)
    """Registered attacks also run at every evaluated point (edited model only) for the trajectory plots."""

    def parsed(self) -> tuple[bool, float]:
        """(relative to the oracle?, the number or δ)."""
        if isinstance(self.forget_recall, str):
            text = self.forget_recall.replace(" ", "")
            if not text.startswith("oracle"):
                raise InvalidField("forget_recall", f"{self.forget_recall!r}: give a number in [0, 1] or 'oracle+δ'.")
            rest = text[len("oracle"):]
            try:
                delta = float(rest) if rest else 0.0
            except ValueError:
                raise InvalidField("forget_recall", f"{self.forget_recall!r}: δ in 'oracle+δ' is not a number.") \
                    from None
            return True, delta
        return False, float(self.forget_recall)

    def target(self, oracle_recall: float | None) -> float:
        relative, number = self.parsed()
        if relative:
            if oracle_recall is None:
                raise ValueError("operating_point.forget_recall is relative to the oracle, but there is none.")
            return min(1.0, oracle_recall + number)
        return number

    def validate(self) -> None:
        relative, number = self.parsed()
        if relative:
            check_range("forget_recall", number, minimum=-1, maximum=1, fix="δ in oracle+δ is a recall difference")
        else:
            check_range("forget_recall", number, minimum=0, maximum=1)
        check_range("max_retain_drop", self.max_retain_drop, minimum=0, maximum=1)
        check_range("max_evaluations", self.max_evaluations, minimum=1, maximum=8)
        from obliviate.registry import ATTACKS

        for i, name in enumerate(self.attacks):
            if name not in ATTACKS:
                raise InvalidField(f"attacks[{i}]", f"unknown attack {name!r}; registered: "
                                   f"{', '.join(ATTACKS.names())}.")
