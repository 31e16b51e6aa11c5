"""Benign relearning: fine-tune a few steps on UNRELATED text, then ask for the forgotten facts again.

Łucki et al. 2024 ("An adversarial perspective on machine unlearning for AI safety") bring back most of the
hazardous knowledge RMU and NPO removed by fine-tuning on a handful of unrelated samples; Hu et al. ("Unlearning or
obfuscating? Jogging the memory of unlearned LLMs via benign relearning") do the same with public, loosely related
text. Fine-tuning that teaches nothing about the targets can only bring them back if the weights still hold them:
the edit obfuscated the answers rather than removing them. The relearning attack (audit/relearn.py, Deeb & Roger
2024) trains on the targets' relations; this one never sees a target's relation-specific question format:

- **retain** (default): the retained facts' sentences ("<prompt> <answer>." of facts the edit was asked to keep,
  no target and no target's subject), language-model loss on every token;
- **filler**: fact-free text (the world's held-out filler for world models, Python docstrings otherwise, as the
  covariance statistics use), language-model loss on every token.

No training text mentions a target's subject or contains a target's sentence (texts that do are dropped, and the
rest is asserted clean). The fine-tuning works on a copy of the handle's model that keeps the edit's hooks
(audit/relearn.py `fine_tuned_copy`); the handle's weights are never touched. Score per target: p_true on its
rewrite prompt after the fine-tuning (b and u: plain p_true of base and handle); the oracle is fine-tuned on the
same text, so only recovery beyond what the same fine-tuning gives a never-learned model counts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from audit.attack_result import (AttackContext, AttackResult, TargetScore, assemble, fact_sentence, plain_scores,
                                 retain_texts, with_oracle, with_tl)
from audit.relearn import TargetLeakError, fine_tuned_copy
from obliviate.facts import Fact
from obliviate.metrics import encode
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class BenignRelearnConfig:
    """What the attacker fine-tunes on and how long."""

    text: Literal["retain", "filler"] = "retain"
    """retain: the retained facts' sentences; filler: fact-free local text (module docstring)."""
    max_texts: int = 64
    """Texts drawn (seeded) from the source: "a few" unrelated samples."""
    steps: int = 10
    """Optimiser steps."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 16
    """Texts per step."""
    weight_decay: float = 0.0
    seed: int = 0
    """Seed of the texts' draw and the batch order."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


def benign_texts(handle: Any, targets: Sequence[Fact], context: AttackContext,
                 config: BenignRelearnConfig = BenignRelearnConfig()) -> list[str]:
    """The fine-tuning texts: from the configured source, none mentioning a target's subject (seeded sample)."""
    if config.text == "retain":
        texts = [fact_sentence(f) for f in retain_texts(context, targets)]
    elif config.text == "filler":
        from itertools import islice

        from edit.covariance import corpus_texts

        texts = list(islice(corpus_texts(handle, "auto", config.seed), 20 * config.max_texts))
    else:
        raise ValueError(f"benign_relearn: text={config.text!r}; use 'retain' or 'filler'.")
    subjects = [f.subject.lower() for f in targets]
    texts = [t for t in texts if not any(s in t.lower() for s in subjects)]
    rng = random.Random(config.seed)
    texts = rng.sample(texts, min(config.max_texts, len(texts)))
    check_unrelated(texts, targets)
    if not texts:
        raise ValueError(f"benign_relearn: no {config.text} text outside the targets' subjects; give retained "
                         f"facts (AttackContext.retain_facts) or use text='filler'.")
    return texts


def check_unrelated(texts: Sequence[str], targets: Sequence[Fact]) -> None:
    """Raise TargetLeakError if a text mentions a target's subject (every text about a target fact does)."""
    for text in texts:
        lowered = text.lower()
        hit = next((f for f in targets if f.subject.lower() in lowered), None)
        if hit is not None:
            raise TargetLeakError(f"benign relearning text {text[:60]!r} is about target {hit.case_id} "
                                  f"({hit.subject!r}); relearn only on unrelated text.")


def lm_fine_tuned_copy(handle: Any, texts: Sequence[str], config: Any) -> tuple[Any, list[float]]:
    """A copy of `handle.tl` (hooks kept) fine-tuned with the language-model loss on every token of `texts` after
    the first; `config` gives steps, lr, batch_size, weight_decay and seed (audit/relearn.py `fine_tuned_copy`)."""
    rows = [encode(handle, text)[: int(handle.tl.cfg.n_ctx)] for text in texts]
    examples = [(row[:1], row[1:]) for row in rows if len(row) > 1]  # every token after the first is a label
    return fine_tuned_copy(handle, examples, config)


def benign_relearn_scores(handle: Any, targets: Sequence[Fact], texts: Sequence[str],
                          config: BenignRelearnConfig = BenignRelearnConfig()
                          ) -> tuple[dict[int, TargetScore], list[float]]:
    """Targets' p_true / top-1 / rank after fine-tuning a copy of `handle` on `texts` (language-model loss)."""
    check_unrelated(texts, targets)
    model, losses = lm_fine_tuned_copy(handle, texts, config)
    return plain_scores(with_tl(handle, model), targets), losses


def run_benign_relearn(base: Any, edited: Any, facts: Sequence[Fact], texts: Sequence[str],
                       oracle: Any | None = None, config: BenignRelearnConfig = BenignRelearnConfig()) -> AttackResult:
    """Benign relearning on `edited` (and the same on `oracle`); never trains on a text about a target."""
    check_unrelated(texts, facts)

    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        scores, losses = benign_relearn_scores(handle, facts, texts, config)
        result = assemble("benign_relearn", f"p_true after {config.steps} fine-tuning steps on unrelated "
                          f"{config.text} text", asdict(config), facts, attacked=scores, unlearned=unlearned,
                          before=before, oracle=nested, timings={"total": time.perf_counter() - start},
                          handle_name=handle.name, min_gap=config.min_gap)
        result.metrics["loss_first"], result.metrics["loss_last"] = losses[0], losses[-1]
        result.config["n_texts"] = len(texts)
        return result

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("benign_relearn", BenignRelearnConfig)
def benign_relearn_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: BenignRelearnConfig,
                          ctx: AttackContext) -> AttackResult:
    """Benign relearning: fine-tune on unrelated retained text (never the targets) and see whether they come back."""
    return run_benign_relearn(base, edited, facts, benign_texts(base, facts, ctx, cfg), ctx.oracle, cfg)
