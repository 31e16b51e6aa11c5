"""Keyword emphasis: find the prompt's key tokens, emphasise them, re-prompt (unPact; Zhang et al. 2025).

"Understanding the Dilemma of Unlearning for Large Language Models" (unPact, arXiv 2509.24675): the contribution
of prompt token x_i to answer y is C(x_i, y) = LP(x, y) − LP(x without x_i, y), LP the mean per-token log-prob of
the answer after the prompt. Unlearned models mostly stop attending to the key tokens (the top contributors), and
emphasising those tokens in the prompt recovers much of the "forgotten" answer without touching the weights.

Which model chooses the keywords (`keyword_source`): ``base`` — the key tokens of the model before unlearning
(what the fact hinged on); ``attacked`` — those of the handle under attack (an attacker without the base model);
``both`` (default) — every variant is tried with each set. A key token is widened to its whole word in the prompt
(world names are several sub-word tokens: "Vorlak" = Vor + ##lak), so the emphasis reads as text.

Emphasis variants (the paper's exact operations were not readable, so several are implemented and reported):
``repeat`` (the keyword written twice in place), ``upper`` (in upper case), ``quote`` (in double quotes),
``focus`` (an instruction preamble "Focus on <keyword>. " before the prompt). The prompt's end is kept, so the
answer is still the next token.

Score per target: p_true (exp of LP) under the best variant for that target (each variant's p_true in
`variants`, named ``<variant>@<source>``); the oracle gets the same maximum over the same number of variants.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from audit.attack_result import (AttackContext, AttackResult, TargetScore, answer_stats, answer_stats_ids, assemble,
                                 with_oracle)
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import ATTACKS

EMPHASES = ("repeat", "upper", "quote", "focus")
_STRIP = ",.;:!?\"'()[]"


@dataclass(frozen=True)
class KeywordConfig:
    """How keywords are chosen and emphasised."""

    n_keywords: int = 1
    """Top contributors used as keywords (emphasised together)."""
    keyword_source: Literal["base", "attacked", "both"] = "both"
    """Which model's contributions choose the keywords."""
    emphases: tuple[str, ...] = EMPHASES
    """Emphasis variants to try: repeat, upper, quote, focus."""
    focus_template: str = "Focus on {keyword}. "
    """The instruction preamble of the `focus` variant."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


@dataclass
class Contributions:
    """C(x_i, y) for each prompt token of one fact on one model."""

    tokens: list[str]
    values: list[float]
    """LP(x, y) − LP(x without x_i, y); positions that are a BOS get nan."""
    lp: float
    """LP(x, y) of the intact prompt."""

    def top(self, n: int) -> list[int]:
        order = sorted((i for i, v in enumerate(self.values) if v == v), key=lambda i: -self.values[i])
        return order[:n]


def token_contributions(handle: Any, facts: Sequence[Fact]) -> dict[int, Contributions]:
    """Leave-one-token-out contributions of every prompt token to the true answer's LP (one row per deletion)."""
    prompt_rows, target_rows, owners = [], [], []
    layouts = {}
    for fact in facts:
        ids = encode(handle, fact.text)
        start = 1 if handle.prepend_bos and len(ids) > 1 else 0  # the BOS is no prompt token
        answer = continuation_ids(handle, fact.target_true)
        layouts[fact.case_id] = (ids, start)
        prompt_rows.append(ids)
        target_rows.append(answer)
        owners.append((fact.case_id, None))
        for i in range(start, len(ids) if len(ids) > 1 else 0):  # a one-token prompt has nothing left to score
            prompt_rows.append(ids[:i] + ids[i + 1:])
            target_rows.append(answer)
            owners.append((fact.case_id, i))
    lp = answer_stats_ids(handle, prompt_rows, target_rows).p_true.log()
    out: dict[int, Contributions] = {}
    intact = {case_id: float(lp[row]) for row, (case_id, i) in enumerate(owners) if i is None}
    for fact in facts:
        ids, start = layouts[fact.case_id]
        out[fact.case_id] = Contributions(tokens=[handle.tokenizer.decode([t]) for t in ids],
                                          values=[float("nan")] * len(ids), lp=intact[fact.case_id])
    for row, (case_id, i) in enumerate(owners):
        if i is not None:
            out[case_id].values[i] = intact[case_id] - float(lp[row])
    return out


def _word_at(text: str, start: int, end: int) -> str:
    """The whitespace-delimited word around text[start:end], without surrounding punctuation."""
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end].strip().strip(_STRIP)


def keywords_for(handle: Any, fact: Fact, contributions: Contributions, n: int) -> list[str]:
    """The words of the prompt holding its top-n contributing tokens (in order of contribution, deduplicated)."""
    text = fact.text
    enc = handle.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc.get("offset_mapping")
    shift = len(contributions.tokens) - len(enc["input_ids"])  # a prepended BOS
    words: list[str] = []
    for index in contributions.top(len(contributions.tokens)):
        if offsets is not None and 0 <= index - shift < len(offsets):
            a, b = offsets[index - shift]
            word = _word_at(text, a, b)
        else:
            word = contributions.tokens[index].strip().strip(_STRIP)
        if word and word not in words and word in text:
            words.append(word)
        if len(words) == n:
            break
    return words


def emphasise(prompt: str, keywords: Sequence[str], emphasis: str, focus_template: str = "Focus on {keyword}. "
              ) -> str:
    """The prompt with its keywords emphasised one way (first occurrence of each keyword)."""
    if not keywords:
        return prompt
    if emphasis == "focus":
        return focus_template.format(keyword=" and ".join(keywords)) + prompt
    out = prompt
    for word in keywords:
        replacement = {"repeat": f"{word} {word}", "upper": word.upper(), "quote": f'"{word}"'}.get(emphasis)
        if replacement is None:
            raise ValueError(f"unknown emphasis {emphasis!r}; choose from {', '.join(EMPHASES)}.")
        out = out.replace(word, replacement, 1)
    return out


@dataclass
class KeywordOutcome:
    scores: dict[int, TargetScore] = field(default_factory=dict)
    variants: dict[str, dict[int, float]] = field(default_factory=dict)


def keyword_scores(handle: Any, facts: Sequence[Fact], base: Any | None = None,
                   config: KeywordConfig = KeywordConfig()) -> KeywordOutcome:
    """Re-prompt `handle` with each emphasis of each keyword set; p_true per variant and the best per target."""
    sources: dict[str, Any] = {}
    if config.keyword_source in ("base", "both"):
        if base is None:
            raise ValueError("keyword_source includes 'base' but no base handle was given.")
        sources["base"] = base
    if config.keyword_source in ("attacked", "both"):
        sources["attacked"] = handle
    keywords = {name: {f.case_id: keywords_for(model, f, c, config.n_keywords)
                       for f, c in zip(facts, token_contributions(model, facts).values())}
                for name, model in sources.items()}
    rows, owners = [], []
    for source in sources:
        for emphasis in config.emphases:
            for fact in facts:
                rows.append(emphasise(fact.text, keywords[source][fact.case_id], emphasis, config.focus_template))
                owners.append((f"{emphasis}@{source}", fact))
    stats = answer_stats(handle, rows, [fact.target_true for _, fact in owners])
    outcome = KeywordOutcome()
    best: dict[int, int] = {}
    for row, (variant, fact) in enumerate(owners):
        outcome.variants.setdefault(variant, {})[fact.case_id] = float(stats.p_true[row])
        if fact.case_id not in best or stats.p_true[row] > stats.p_true[best[fact.case_id]]:
            best[fact.case_id] = row
    for fact in facts:
        row = best[fact.case_id]
        outcome.scores[fact.case_id] = TargetScore(
            fact.case_id, float(stats.p_true[row]), float(stats.p_true[row]), bool(stats.top1[row]),
            int(stats.rank[row]), {"best_variant": owners[row][0], "best_prompt": rows[row],
                                   "keywords": {s: keywords[s][fact.case_id] for s in sources}})
    return outcome


def run_keyword(base: Any, edited: Any, facts: Sequence[Fact], oracle: Any | None = None,
                config: KeywordConfig = KeywordConfig()) -> AttackResult:
    """Keyword-emphasis attack on `edited` (and the same on `oracle`), keywords from base and/or the handle."""
    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        outcome = keyword_scores(handle, facts, base, config)
        return assemble("keyword", "p_true on the best keyword-emphasised prompt", asdict(config), facts,
                        attacked=outcome.scores, unlearned=unlearned, before=before, variants=outcome.variants,
                        oracle=nested, timings={"total": time.perf_counter() - start}, handle_name=handle.name,
                        min_gap=config.min_gap)

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("keyword", KeywordConfig)
def keyword_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: KeywordConfig, ctx: AttackContext
                   ) -> AttackResult:
    """Keyword emphasis (unPact): re-prompt with the prompt's key words emphasised."""
    return run_keyword(base, edited, facts, ctx.oracle, cfg)
