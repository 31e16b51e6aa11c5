"""In-context recovery: put related facts before the question and see whether the "forgotten" answer comes back.

An unlearning method tuned on bare prompts can leave the answer reachable from a context that primes the subject
or the relation (the in-context probes of Lynch et al. 2024, "Eight methods to evaluate robust unlearning in
LLMs"). Two contexts, each a run of the world's own sentences ("<prompt with subject>
<answer>.") before the target's prompt:

- **subject_facts**: the subject's retained facts (other facts about the same subject that are not targets);
- **relation_shots**: a few other subjects' facts of the same relation (few-shot, chosen by a seeded draw).

No context fact is a target, and none contains the target's answer: a prompt that shows the answer would test
copying, not memory (asserted per prompt). Contexts are cut from the front, whole facts at a time, to fit the
model's context window. Score per target: p_true of the answer after the best of the contexts it has (the
headline; each context's score is a variant). b and u are the plain p_true of base and handle; the oracle gets
the same prompts, so only what the edited model recovers beyond the never-learned model counts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from audit.attack_result import (AttackContext, AttackResult, TargetScore, answer_stats, assemble, fact_sentence,
                                 with_oracle)
from obliviate.facts import Fact
from obliviate.metrics import encode
from obliviate.registry import ATTACKS

CONTEXTS = ("subject_facts", "relation_shots")


@dataclass(frozen=True)
class InContextConfig:
    """Which contexts precede the question and how many facts each holds."""

    n_subject_facts: int = 5
    """At most this many of the subject's retained facts (0: no subject_facts context)."""
    n_shots: int = 3
    """Other subjects' facts of the same relation (0: no relation_shots context)."""
    seed: int = 0
    """Seed of the shots' draw."""
    batch_size: int = 32
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


class AnswerInContextError(AssertionError):
    """A built prompt shows the target's answer or holds a target fact."""


def context_facts(target: Fact, pool: Sequence[Fact], targets: Sequence[Fact], config: InContextConfig
                  ) -> dict[str, list[Fact]]:
    """Per context, the facts to put before `target` (none a target, none showing the target's answer)."""
    target_ids = {f.case_id for f in targets}
    answer = target.target_true.lower()
    usable = [f for f in pool if f.case_id not in target_ids and answer not in fact_sentence(f).lower()]
    chosen: dict[str, list[Fact]] = {}
    if config.n_subject_facts:
        chosen["subject_facts"] = [f for f in usable if f.subject == target.subject][:config.n_subject_facts]
    if config.n_shots:
        others = [f for f in usable if f.relation_id == target.relation_id and f.subject != target.subject]
        rng = random.Random(f"{config.seed}:{target.case_id}")
        chosen["relation_shots"] = rng.sample(others, min(config.n_shots, len(others)))
    return {name: facts for name, facts in chosen.items() if facts}


def build_prompt(handle: Any, target: Fact, facts: Sequence[Fact]) -> str:
    """The facts' sentences, then the target's prompt; facts dropped from the front until it fits the context."""
    room = int(handle.tl.cfg.n_ctx) - len(encode(handle, f" {target.target_true}"))
    kept = list(facts)
    while True:
        prompt = " ".join([*(fact_sentence(f) for f in kept), target.text])
        if len(encode(handle, prompt)) <= room or not kept:
            return prompt
        kept = kept[1:]


def check_prompt(prompt: str, target: Fact, targets: Sequence[Fact]) -> None:
    """Raise AnswerInContextError if the context before the question shows the answer or states a target fact."""
    context = prompt[: len(prompt) - len(target.text)]
    if target.target_true.lower() in context.lower():
        raise AnswerInContextError(f"in-context prompt for case {target.case_id} shows its answer "
                                   f"{target.target_true!r}.")
    stated = [f.case_id for f in targets if fact_sentence(f) in context]
    if stated:
        raise AnswerInContextError(f"in-context prompt for case {target.case_id} states target facts {stated}.")


def in_context_prompts(handle: Any, targets: Sequence[Fact], pool: Sequence[Fact],
                       config: InContextConfig = InContextConfig()) -> dict[str, dict[int, str]]:
    """context name → case_id → the prompt (targets without that context are left out)."""
    prompts: dict[str, dict[int, str]] = {name: {} for name in CONTEXTS}
    for target in targets:
        for name, facts in context_facts(target, pool, targets, config).items():
            prompt = build_prompt(handle, target, facts)
            check_prompt(prompt, target, targets)
            prompts[name][target.case_id] = prompt
    return prompts


def in_context_scores(handle: Any, targets: Sequence[Fact], pool: Sequence[Fact],
                      config: InContextConfig = InContextConfig()
                      ) -> tuple[dict[int, TargetScore], dict[str, dict[int, float]]]:
    """Per target the best context's p_true / top-1 / rank, and each context's p_true (the variants)."""
    by_id = {f.case_id: f for f in targets}
    variants: dict[str, dict[int, float]] = {}
    best: dict[int, TargetScore] = {}
    for name, prompts in in_context_prompts(handle, targets, pool, config).items():
        ids = list(prompts)
        stats = answer_stats(handle, [prompts[c] for c in ids], [by_id[c].target_true for c in ids],
                             config.batch_size)
        variants[name] = {}
        for i, case_id in enumerate(ids):
            p = float(stats.p_true[i])
            variants[name][case_id] = p
            if case_id not in best or p > best[case_id].score:
                best[case_id] = TargetScore(case_id, p, p, bool(stats.top1[i]), int(stats.rank[i]),
                                            {"context": name, "prompt": prompts[case_id]})
    missing = [f.case_id for f in targets if f.case_id not in best]
    if missing:
        raise ValueError(f"in_context: no context fact for targets {missing[:5]} (no retained fact of their "
                         f"subjects and no other subject of their relations); give pool facts of those relations.")
    return best, variants


def run_in_context(base: Any, edited: Any, facts: Sequence[Fact], pool: Sequence[Fact], oracle: Any | None = None,
                   config: InContextConfig = InContextConfig()) -> AttackResult:
    """In-context recovery on `edited` (and the same prompts on `oracle`)."""
    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        scores, variants = in_context_scores(handle, facts, pool, config)
        return assemble("in_context", "p_true after the best context of retained facts or same-relation shots",
                        asdict(config), facts, attacked=scores, unlearned=unlearned, before=before,
                        variants=variants, oracle=nested, timings={"total": time.perf_counter() - start},
                        handle_name=handle.name, min_gap=config.min_gap)

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("in_context", InContextConfig)
def in_context_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: InContextConfig, ctx: AttackContext
                      ) -> AttackResult:
    """In context: the subject's retained facts or other subjects' same-relation facts before the question."""
    return run_in_context(base, edited, facts, ctx.pool_facts, ctx.oracle, cfg)
