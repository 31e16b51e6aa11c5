"""Held-out relearning: fine-tune on SOME of the forgotten facts, then ask for the others (Deeb & Roger 2024, RTT).

Deeb & Roger ("Do Unlearning Methods Remove Information from Language Model Weights?", 2024) split the unlearned
facts into T and V, retrain on T ("RTT") and measure V: the facts in V share nothing with T but the unlearning,
so whatever mechanism hid them all (a preference, a suppression circuit, a pushed-down answer direction) is undone
by retraining on T, and V comes back only if its answers were still in the weights. audit/relearn.py trains on
facts that were never unlearned (the retained facts of the same relations): on them a suppressor's loss is already
near zero and its gradient barely touches what hides the targets, so it misses suppressions RTT finds.

Procedure: the targets' subjects are dealt (seeded) into `folds` groups; for each group, a copy of the handle's
model (its permanent hooks kept: audit/relearn.py `fine_tuned_copy`) is fine-tuned on the OTHER groups' targets
(rewrite prompt and paraphrases, teacher-forced on " " + target_true) and scores this group's targets. No copy
ever sees a fact about a subject it is scored on (asserted), nor (by default) a fact whose answer is one it is
scored on, so each target's recovery can come only from what the model still holds about it. A model that never learned
the facts (the oracle) learns T's answers and nothing about V's subjects: only recovery beyond the oracle's under the
same attack counts. Without an oracle, the same attack on decoy answers (audit/verdict.py `decoy_facts`) is the null:
retraining on T's decoy answers cannot bring back V's, which the model never held.

Score per target: p_true of the target on its rewrite prompt after retraining on the other folds (b and u: plain
p_true of base and handle).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from audit.attack_result import AttackContext, AttackResult, TargetScore, assemble, plain_scores, with_oracle, with_tl
from audit.relearn import answer_examples, check_disjoint, fine_tuned_copy
from obliviate.facts import Fact
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class HeldoutRelearnConfig:
    """How the targets are split and how each copy is fine-tuned."""

    folds: int = 2
    """Groups of subjects; each group is scored by a copy fine-tuned on the others (2: train on half, score half)."""
    steps: int = 20
    """Optimiser steps per fold."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 16
    """Prompts per step."""
    weight_decay: float = 0.0
    include_paraphrases: bool = True
    """Train on each training target's paraphrase prompts too."""
    unseen_answers: bool = True
    """Drop from a fold's training the facts whose answer is a scored target's answer, so that no copy is ever
    taught the answer string it is scored on (else a never-taught model "recovers" a target by sharing its answer
    with a trained one)."""
    seed: int = 0
    """Seed of the subjects' deal into folds and of the batch order."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""

    def __post_init__(self) -> None:
        from obliviate.config.loader import check_range

        check_range("folds", self.folds, minimum=2)
        check_range("steps", self.steps, minimum=1)
        check_range("batch_size", self.batch_size, minimum=1)


def subject_folds(targets: Sequence[Fact], folds: int, seed: int) -> list[list[Fact]]:
    """The targets in `folds` groups by subject (the subjects shuffled with `seed`, then dealt round-robin), no
    group empty; a ValueError naming the fix when there are fewer subjects than folds."""
    subjects = sorted({f.subject for f in targets})
    if len(subjects) < folds:
        raise ValueError(f"heldout_relearn: the targets are about {len(subjects)} subject(s), fewer than "
                         f"folds={folds}; it needs facts about at least {folds} subjects (give more targets, lower "
                         f"`folds`, or use the relearn attack).")
    random.Random(seed).shuffle(subjects)
    group = {s: i % folds for i, s in enumerate(subjects)}
    return [[f for f in targets if group[f.subject] == k] for k in range(folds)]


def training_facts(targets: Sequence[Fact], scored: Sequence[Fact], unseen_answers: bool = True) -> list[Fact]:
    """The targets a copy scoring `scored` trains on: every other fold's, less (with `unseen_answers`) those whose
    answer is one of the scored targets' answers; a ValueError when nothing is left to train on."""
    scored_ids = {f.case_id for f in scored}
    answers = {f.target_true.strip().lower() for f in scored} if unseen_answers else set()
    trained = [f for f in targets if f.case_id not in scored_ids and f.target_true.strip().lower() not in answers]
    check_disjoint(scored, trained)
    if not trained:
        raise ValueError(f"heldout_relearn: nothing to train on for the fold of {scored[0].subject!r}: every other "
                         f"target shares one of its answers; give more targets or set unseen_answers: false.")
    return trained


def heldout_relearn_scores(handle: Any, targets: Sequence[Fact],
                           config: HeldoutRelearnConfig = HeldoutRelearnConfig()
                           ) -> tuple[dict[int, TargetScore], list[float]]:
    """Each target's p_true / top-1 / rank on a copy of `handle` fine-tuned on the other folds' targets, and the
    last loss of each fold's fine-tuning."""
    scores: dict[int, TargetScore] = {}
    last_losses = []
    for scored in subject_folds(targets, config.folds, config.seed):
        trained = training_facts(targets, scored, config.unseen_answers)
        model, losses = fine_tuned_copy(handle, answer_examples(handle, trained, config.include_paraphrases), config)
        scores.update(plain_scores(with_tl(handle, model), scored))
        last_losses.append(losses[-1])
        del model
    return scores, last_losses


def run_heldout_relearn(base: Any, edited: Any, facts: Sequence[Fact], oracle: Any | None = None,
                        config: HeldoutRelearnConfig = HeldoutRelearnConfig()) -> AttackResult:
    """Held-out relearning on `edited` (and the same on `oracle`): each target scored by a copy that never saw it."""
    subject_folds(facts, config.folds, config.seed)  # refuse too few subjects before any training

    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        scores, losses = heldout_relearn_scores(handle, facts, config)
        result = assemble("heldout_relearn", f"p_true after {config.steps} fine-tuning steps on the other "
                          f"{config.folds - 1} of {config.folds} subject folds of the targets", asdict(config), facts,
                          attacked=scores, unlearned=unlearned, before=before, oracle=nested,
                          timings={"total": time.perf_counter() - start}, handle_name=handle.name,
                          min_gap=config.min_gap)
        result.metrics["loss_last_mean"] = sum(losses) / len(losses)
        return result

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("heldout_relearn", HeldoutRelearnConfig)
def heldout_relearn_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: HeldoutRelearnConfig,
                           ctx: AttackContext) -> AttackResult:
    """Held-out relearning: retrain on some targets, score the others (never a subject the copy was trained on)."""
    return run_heldout_relearn(base, edited, facts, ctx.oracle, cfg)
