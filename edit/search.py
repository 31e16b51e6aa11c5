"""The operating-point search: turn a method's strength knob to the weakest setting that forgets enough.

Comparing methods at their default settings compares settings, not methods (one forgets 10% of the targets, another
95%). As TOFU (Maini et al. 2024) reads forget quality against model utility along each method's trajectory, we fix
the forgetting and compare the rest: for each method the search finds the weakest knob value (`Knob`, declared by
the method in `obliviate.registry`) whose forget recall is at most the target — a number, or the never-learned
oracle's own forget recall plus δ — and reports whether the retain recall stayed within its budget.

Search: the strongest end first (if it does not reach the target, nothing in the range does), then the weakest end
(if it already reaches, it is the answer), then bisection (geometric on a log-scale knob) between the last failing
and the first reaching value until the bracket is tight or the evaluation budget (≤ 8) is spent. When forgetting
enough costs more retain recall than allowed (a failing value already beyond the retain budget ends that search),
or the strongest value neither forgets enough nor stays within the retain budget, the rest of the budget bisects
for the retain frontier — the strongest value within the retain budget — which is the point a "does not reach" row
reports. Forgetting is assumed monotone in the knob; every evaluated point is kept, so a non-monotone trajectory
shows in the record and the plots. Evaluations are cached by knob value (a value is never evaluated twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from obliviate.registry import Knob

REACHED, NOT_REACHED = "reached", "does not reach"


@dataclass
class Point:
    """One evaluated knob value."""

    value: float | int | None
    """The knob's value (None: a method without a knob, at its configuration)."""
    forget_recall: float
    retain_recall: float
    retain_drop: float
    """Retain recall of the base model minus this one's (positive: lost)."""
    perplexity: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further figures of the point (e.g. each trajectory attack's mean recovered score)."""

    def reaches(self, target: float) -> bool:
        return self.forget_recall <= target + 1e-12


@dataclass
class SearchResult:
    """Where the search ended and every point it tried, in order."""

    status: Literal["reached", "does not reach"]
    chosen: Point
    """The weakest point that reaches the target within the retain budget; when none does, the best point tried
    (lowest forget recall within the retain budget, else the smallest retain drop)."""
    points: list[Point]
    target: float
    max_retain_drop: float
    knob: dict[str, Any] | None
    budget: int
    budget_exhausted: bool = False
    """The bisection stopped because the budget was spent, not because the bracket was tight."""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "target_forget_recall": self.target,
                "max_retain_drop": self.max_retain_drop, "knob": self.knob, "budget": self.budget,
                "budget_exhausted": self.budget_exhausted, "chosen": asdict(self.chosen),
                "points": [asdict(p) for p in self.points]}


class _Budget(Exception):
    pass


def _tight(knob: Knob, a: float, b: float) -> bool:
    """No value worth trying is left between a and b."""
    mid = knob.midpoint(a, b)
    if knob.integer:
        return knob.value(mid) in (knob.value(a), knob.value(b))
    if knob.scale == "log":
        return abs(math.log(abs(b) / abs(a))) < 0.05  # within 5%: finer than the knob means anything
    return abs(b - a) <= 1e-3 * max(abs(a), abs(b), 1e-12)


def best_point(points: list[Point], max_retain_drop: float) -> Point:
    within = [p for p in points if p.retain_drop <= max_retain_drop + 1e-12]
    if within:
        return min(within, key=lambda p: (p.forget_recall, p.retain_drop))
    return min(points, key=lambda p: (p.retain_drop, p.forget_recall))


def _search_retain_frontier(knob: Knob, at: Callable[[float], Point], within: Callable[[Point], bool],
                            points: list[Point], weak: float, strong: float) -> None:
    """Bisect between the strongest tried setting within the retain budget and the weakest one beyond it, for the
    most a method can forget within the budget (what a "does not reach" row reports, instead of the weak end
    where the forget search left it). Retain loss is assumed monotone in the knob, like forgetting."""
    def position(x: float) -> float:  # 0 at the weak end, 1 at the strong end, whichever way the knob runs
        return (x - weak) / (strong - weak)

    kept = [p.value for p in points if within(p)]
    lost = [p.value for p in points if not within(p)]
    if not kept or not lost:
        return
    kept_x, lost_x = max(kept, key=position), min(lost, key=position)
    while position(kept_x) < position(lost_x) and not _tight(knob, kept_x, lost_x):
        mid = knob.midpoint(kept_x, lost_x)
        if within(at(mid)):
            kept_x = mid
        else:
            lost_x = mid


def search_knob(knob: Knob | None, evaluate: Callable[[float | int | None], Point], *, target: float,
                max_retain_drop: float, low: float | None = None, high: float | None = None,
                budget: int = 8) -> SearchResult:
    """Find the weakest knob value in [low, high] (default: the knob's range) that reaches `target` (see module)."""
    if budget < 1:
        raise ValueError("the search needs a budget of at least one evaluation.")
    points: list[Point] = []
    cache: dict[Any, Point] = {}

    def at(x: float | None) -> Point:
        value = None if knob is None or x is None else knob.value(x)
        if value not in cache:
            if len(cache) >= budget:
                raise _Budget
            cache[value] = evaluate(value)
            points.append(cache[value])
        return cache[value]

    def within(point: Point) -> bool:
        return point.retain_drop <= max_retain_drop + 1e-12

    def result(status: str, chosen: Point, reason: str, exhausted: bool = False) -> SearchResult:
        return SearchResult(status, chosen, points, target, max_retain_drop,  # type: ignore[arg-type]
                            None if knob is None else {**asdict(knob), "low": low, "high": high}, budget, exhausted,
                            reason)

    if knob is None:
        point = at(None)
        ok = point.reaches(target) and point.retain_drop <= max_retain_drop + 1e-12
        return result(REACHED if ok else NOT_REACHED, point, "no strength knob: evaluated at its configuration")
    low = knob.low if low is None else low
    high = knob.high if high is None else high
    weak, strong = knob.ends(low, high)
    strongest = at(strong)
    if not strongest.reaches(target):
        exhausted = False
        if not within(strongest):  # and it costs too much: report the most it forgets within the retain budget
            try:
                at(weak)
                _search_retain_frontier(knob, at, within, points, weak, strong)
            except _Budget:
                exhausted = True
        return result(NOT_REACHED, best_point(points, max_retain_drop),
                      f"the strongest setting ({knob.field}={strongest.value}) leaves forget recall "
                      f"{strongest.forget_recall:.3f} > {target:.3f}", exhausted)
    exhausted = False
    reaching = strongest
    try:
        weakest = at(weak)
        if weakest.reaches(target):
            reaching = weakest
        else:
            failing_x, reaching_x = weak, strong
            while not _tight(knob, failing_x, reaching_x):
                mid = knob.midpoint(failing_x, reaching_x)
                point = at(mid)
                if point.reaches(target):
                    reaching, reaching_x = point, mid
                else:
                    failing_x = mid
                    if not within(point):
                        break  # every stronger setting loses more retain recall: none reaches within budget
        if not within(reaching):
            _search_retain_frontier(knob, at, within, points, weak, strong)
    except _Budget:
        exhausted = True
    if not within(reaching):
        return result(NOT_REACHED, best_point(points, max_retain_drop),
                      f"the weakest setting that forgets enough ({knob.field}={reaching.value}) loses "
                      f"{reaching.retain_drop:.3f} retain recall > {max_retain_drop:.3f}", exhausted)
    return result(REACHED, reaching, f"weakest {knob.field} reaching forget recall ≤ {target:.3f}", exhausted)
