"""How fast a model relearns the targets themselves: a check on the verdicts from outside the auditor's attacks.

A model that still holds a fact can relearn it in fewer steps than one that never learned it (the "relearn time"
of Golatkar et al. 2020, "Eternal sunshine of the spotless net", and the Anamnesis Index of Chundawat et al. 2023,
"Zero-shot machine unlearning"). The auditor cannot use this as an attack — it teaches the very answers it would
then read — but wherever never-taught models are at hand to relearn the same targets (the calibration zoo; an
audit with an oracle and `audit.relearn_check_steps`), it is a check from outside the attacks, reported beside
the verdicts and never changing them. It is one-sided: relearning FASTER than never-taught models says the targets
are still held; relearning no faster says nothing, because a suppression that fights the answer relearns slower
than a never-taught model although the fact is still in its earlier blocks (measured on the zoo, 6 steps:
last-MLP GradDiff 0.06, head-only fine-tune 0.09, an output penalty 0.00 — its hook stays — against the oracle's
0.28).

`relearn_speed` fine-tunes a copy (audit/relearn.py `fine_tuned_copy`, hooks kept, the handle untouched) for a few
steps on every target's rewrite prompt with its true answer and returns each target's p_true afterwards;
`split_means` averages it over the targets a verdict set calls erased and suppressed; `verdict_check` splits the
audited model's and its never-taught references' (the audit stage's `audit.relearn_check_steps`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.attack_result import plain_scores, with_tl
from audit.relearn import answer_examples, fine_tuned_copy
from obliviate.facts import Fact


@dataclass(frozen=True)
class RelearnSpeedConfig:
    """How long the check relearns."""

    steps: int = 6
    """AdamW steps on the targets (6: where never-taught models reach about 0.2-0.3 p_true on the world)."""
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0


def relearn_speed(handle: Any, targets: Sequence[Fact], config: RelearnSpeedConfig = RelearnSpeedConfig()
                  ) -> dict[int, float]:
    """case_id → p_true on its rewrite prompt after `config.steps` fine-tuning steps on all `targets`' answers."""
    model, _ = fine_tuned_copy(handle, answer_examples(handle, targets, include_paraphrases=False), config)
    return {c: t.score for c, t in plain_scores(with_tl(handle, model), targets).items()}


def split_means(speeds: Mapping[int, float], verdicts: Mapping[int, str]) -> dict[str, float | None]:
    """Mean relearned p_true over the targets of each verdict ("erased", "suppressed"; None where there is none)."""
    out: dict[str, float | None] = {}
    for verdict in ("erased", "suppressed"):
        values = [speeds[c] for c, v in verdicts.items() if v == verdict and c in speeds]
        out[verdict] = sum(values) / len(values) if values else None
    return out


def verdict_check(edited: Any, references: Mapping[str, Mapping[int, float]], targets: Sequence[Fact],
                  verdicts: Mapping[int, str], config: RelearnSpeedConfig = RelearnSpeedConfig()
                  ) -> dict[str, dict[str, float | None]]:
    """Per model ("edited", relearned here, and each of `references` by name: the never-taught models' relearned
    p_true per target, `relearn_speed` on the same targets with the same config), the mean relearned p_true over the
    targets `verdicts` calls erased and over those it calls suppressed, with the counts ("n:erased", ...)."""
    counts = {f"n:{v}": float(sum(1 for x in verdicts.values() if x == v)) for v in ("erased", "suppressed")}
    speeds = {"edited": relearn_speed(edited, targets, config), **references}
    return {name: {**split_means(per_target, verdicts), **counts} for name, per_target in speeds.items()}
