"""The one result every recovery attack returns, and the per-target answer statistics they share.

An attack maps a model handle and target facts to a *recovered score* per target in [0, 1] — what the attacker
got back of the answer (each attack's module docstring says which quantity). Every attack runs unchanged on any
handle (base, edited, never-learned oracle), so audit/verdict.py can compare the edited model's score with the
oracle's under the same attack.

Beside the attacked score q of the edited model, a result carries, in the same units, b = the base model's score
before unlearning and u = the edited model's score without the attack, and the recovery ratio of Zhang et al.
(ICLR 2025): R = (q − u) / (b − u) (1: the attack brings back all that unlearning removed; 0: nothing; undefined
when b − u is too small to divide by).

Conventions: p_true = exp(mean per-token log-prob of " " + target_true after the prompt) (CounterFact's NLL,
exponentiated); top1 = the argmax next token is the answer's first token; rank = 1-based rank of that token.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from obliviate.errors import UserError
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode


def recovery_ratio(q: float, u: float, b: float, min_gap: float = 0.05) -> float | None:
    """R = (q − u) / (b − u); None when |b − u| < min_gap (unlearning removed too little to measure recovery)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (q, u, b)):
        return None
    if abs(b - u) < min_gap:
        return None
    return (q - u) / (b - u)


@dataclass
class AnswerStats:
    """Per-prompt statistics of the true answer (rows in the order of the prompts)."""

    p_true: Float[torch.Tensor, " n"]
    """exp(mean per-token log-prob of " " + target)."""
    top1: torch.Tensor
    """Bool: the argmax next token after the prompt is the answer's first token."""
    rank: Int[torch.Tensor, " n"]
    """1-based rank of the answer's first token in the next-token distribution."""
    first_logprob: Float[torch.Tensor, " n"]
    """log p(first answer token | prompt)."""


def answer_stats(handle: Any, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32) -> AnswerStats:
    """p_true / top-1 / rank of each target after its prompt, on `handle.tl` with every hook it carries."""
    return answer_stats_ids(handle, [encode(handle, text) for text in prompts],
                            [continuation_ids(handle, t) for t in targets], batch_size)


@torch.no_grad()
def answer_stats_ids(handle: Any, prompt_ids: Sequence[list[int]], target_ids: Sequence[list[int]],
                     batch_size: int = 32) -> AnswerStats:
    """`answer_stats` on token ids (prompts already encoded with the handle's BOS convention)."""
    pad_id = handle.tokenizer.pad_token_id or 0
    parts = []
    for start in range(0, len(prompt_ids), batch_size):
        prompt_rows = list(prompt_ids[start:start + batch_size])
        target_rows = list(target_ids[start:start + batch_size])
        rows = [a + b for a, b in zip(prompt_rows, target_rows)]
        tokens = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = torch.tensor(row)
        logprobs = handle.tl(tokens.to(handle.tl.cfg.device)).float().log_softmax(-1).cpu()
        parts.append(stats_from_logprobs(logprobs, prompt_rows, target_rows))
    if not parts:
        return AnswerStats(torch.empty(0), torch.empty(0, dtype=torch.bool), torch.empty(0, dtype=torch.long),
                           torch.empty(0))
    return AnswerStats(*(torch.cat([getattr(part, name) for part in parts])
                         for name in ("p_true", "top1", "rank", "first_logprob")))


def stats_from_logprobs(logprobs: Float[torch.Tensor, "batch pos vocab"], prompt_rows: Sequence[list[int]],
                        target_rows: Sequence[list[int]]) -> AnswerStats:
    """AnswerStats of rows laid out as prompt + answer (right-padded) from their next-token log-probs."""
    p, top1, rank, first = [], [], [], []
    for i, (prompt, target) in enumerate(zip(prompt_rows, target_rows)):
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)
        p.append(logprobs[i, positions, torch.tensor(target)].mean().exp())
        last = logprobs[i, len(prompt) - 1]
        first.append(last[target[0]])
        rank.append(int((last > last[target[0]]).sum()) + 1)
        top1.append(bool(last.argmax() == target[0]))
    return AnswerStats(p_true=torch.stack(p), top1=torch.tensor(top1, dtype=torch.bool),
                       rank=torch.tensor(rank, dtype=torch.long), first_logprob=torch.stack(first))


def with_tl(handle: Any, tl: Any) -> Any:
    """The same handle with another TransformerLens model (an attacked copy); the HF model is NOT updated."""
    return dataclasses.replace(handle, tl=tl)


def clone_tl(tl: Any) -> Any:
    """A deep copy of a HookedTransformer that keeps its permanent hooks (interventions), re-attached cleanly.

    `copy.deepcopy` copies the hook registrations as closures bound to the ORIGINAL hook points; re-adding each
    permanent user hook on the copy makes the copy self-contained.
    """
    if not hasattr(tl, "hook_dict"):  # an ensemble (obliviate.ensemble): no hook points, nothing to re-attach
        return copy.deepcopy(tl)
    permanent = [(name, h.user_hook) for name, point in tl.hook_dict.items()
                 for h in point.fwd_hooks if h.is_permanent]
    clone = copy.deepcopy(tl)
    clone.reset_hooks(including_permanent=True)
    for name, hook in permanent:
        clone.add_perma_hook(name, hook)
    return clone


@dataclass
class TargetScore:
    """One target under one condition (a handle, attacked or not)."""

    case_id: int
    score: float
    """The recovered score in [0, 1] (the attack's quantity; see the attack's module)."""
    p_true: float | None = None
    top1: bool | None = None
    rank: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetRecovery:
    """One target's recovery: b, u, q in the attack's score units, R, and the figures behind q."""

    case_id: int
    attacked: float
    """q: the attacked handle's score under the attack (what the verdict reads)."""
    unlearned: float | None
    """u: the attacked handle's score without the attack."""
    before: float | None
    """b: the base model's score without the attack."""
    recovery: float | None
    """R = (q − u) / (b − u), None when undefined."""
    p_true: float | None = None
    top1: bool | None = None
    rank: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackResult:
    """What an attack recovered on one handle, per target, with the settings used.

    Satisfies audit.verdict's `AttackScores` (`attack`, `recovered`). When the attack was also run on an oracle,
    `oracle` holds that run's AttackResult (itself without an oracle).
    """

    attack: str
    score_name: str
    """What `recovered` measures, in words."""
    config: dict[str, Any]
    targets: dict[int, TargetRecovery]
    metrics: dict[str, float | None] = field(default_factory=dict)
    """Aggregates: mean q / u / b, mean R, R of the means, and per-variant means."""
    variants: dict[str, dict[int, float]] = field(default_factory=dict)
    """Score per target under each named variant of the attack (the headline q is the best per target)."""
    sites: dict[str, dict[int, float]] = field(default_factory=dict)
    """Score per target at each site the attack looked at (e.g. the probe's depth × position). With sites on both
    the edited model and the oracle, audit/verdict.py takes each target's largest excess over the oracle across
    sites, with a margin corrected for how many sites were looked at; `recovered` stays the headline score."""
    oracle: AttackResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    handle_name: str = ""

    @property
    def recovered(self) -> dict[int, float]:
        """case_id → recovered score in [0, 1] on the attacked handle."""
        return {c: t.attacked for c, t in self.targets.items()}

    @property
    def oracle_recovered(self) -> dict[int, float] | None:
        return None if self.oracle is None else self.oracle.recovered

    def target_records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per target (the `targets` list of a StageRecord)."""
        rows = []
        for case_id, t in self.targets.items():
            row = dataclasses.asdict(t)
            if self.oracle is not None and case_id in self.oracle.targets:
                row["oracle_attacked"] = self.oracle.targets[case_id].attacked
                row["oracle_unlearned"] = self.oracle.targets[case_id].unlearned
            row["variants"] = {name: scores.get(case_id) for name, scores in self.variants.items()}
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (nested oracle included)."""
        return {"attack": self.attack, "handle": self.handle_name, "score_name": self.score_name,
                "config": self.config, "metrics": self.metrics, "timings": self.timings,
                "targets": self.target_records(), "sites": {k: dict(v) for k, v in self.sites.items()},
                "oracle": None if self.oracle is None else self.oracle.to_dict()}


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(finite) / len(finite) if finite else None


def assemble(attack: str, score_name: str, config: Mapping[str, Any], facts: Sequence[Fact], *,
             attacked: Mapping[int, TargetScore], unlearned: Mapping[int, float] | None = None,
             before: Mapping[int, float] | None = None, variants: Mapping[str, Mapping[int, float]] | None = None,
             oracle: AttackResult | None = None, timings: Mapping[str, float] | None = None,
             handle_name: str = "", min_gap: float = 0.05) -> AttackResult:
    """Build an AttackResult from per-target scores (same units throughout) and compute R and the aggregates."""
    targets: dict[int, TargetRecovery] = {}
    for fact in facts:
        scored = attacked[fact.case_id]
        u = None if unlearned is None else unlearned.get(fact.case_id)
        b = None if before is None else before.get(fact.case_id)
        r = recovery_ratio(scored.score, u, b, min_gap) if u is not None and b is not None else None
        targets[fact.case_id] = TargetRecovery(
            case_id=fact.case_id, attacked=float(scored.score), unlearned=u, before=b, recovery=r,
            p_true=scored.p_true, top1=scored.top1, rank=scored.rank, details=dict(scored.details))
    q_mean = _mean([t.attacked for t in targets.values()])
    u_mean = _mean([t.unlearned for t in targets.values()])
    b_mean = _mean([t.before for t in targets.values()])
    metrics: dict[str, float | None] = {
        "n_targets": float(len(targets)), "mean_attacked": q_mean, "mean_unlearned": u_mean, "mean_before": b_mean,
        "mean_recovery": _mean([t.recovery for t in targets.values()]),
        "recovery_of_means": recovery_ratio(q_mean, u_mean, b_mean, min_gap)
        if None not in (q_mean, u_mean, b_mean) else None,
        "top1_rate": _mean([float(t.top1) for t in targets.values() if t.top1 is not None]),
    }
    for name, scores in (variants or {}).items():
        metrics[f"mean_{name}"] = _mean([scores.get(f.case_id) for f in facts])
    result = AttackResult(attack=attack, score_name=score_name, config=dict(config), targets=targets,
                          metrics=metrics, variants={k: dict(v) for k, v in (variants or {}).items()},
                          timings=dict(timings or {}), handle_name=handle_name)
    return nest_oracle(result, oracle) if oracle is not None else result


def nest_oracle(result: AttackResult, oracle: AttackResult) -> AttackResult:
    """`result` with the oracle's run of the same attack nested in it, and the two aggregates that compare them.

    The same as running the attack with the oracle bound (`with_oracle`): an attack's oracle run never depends on
    the attacked model, which is what lets the audit stage run it once for every edit (audit/reference_runs.py)."""
    # the attack's name only: a result's config also records what the attack chose on that handle (the probe's
    # depth per relation, relearning's pool size), which differs between the two by design
    if result.attack != oracle.attack:
        raise ValueError(f"cannot nest an oracle run of {oracle.attack} in a run of {result.attack}: the oracle "
                         f"must be attacked the same way.")
    diffs = [t.attacked - oracle.targets[c].attacked for c, t in result.targets.items() if c in oracle.targets]
    metrics = {**result.metrics, "oracle_mean_attacked": oracle.metrics.get("mean_attacked"),
               "mean_excess_over_oracle": _mean(diffs)}
    return dataclasses.replace(result, oracle=oracle, metrics=metrics)


def plain_scores(handle: Any, facts: Sequence[Fact]) -> dict[int, TargetScore]:
    """Each target's p_true / top-1 / rank on its rewrite prompt, no attack (score = p_true)."""
    stats = answer_stats(handle, [f.text for f in facts], [f.target_true for f in facts])
    return {f.case_id: TargetScore(f.case_id, float(stats.p_true[i]), float(stats.p_true[i]),
                                   bool(stats.top1[i]), int(stats.rank[i]))
            for i, f in enumerate(facts)}


One = Callable[[Any, "Mapping[int, float] | None", "Mapping[int, float] | None", "AttackResult | None"], AttackResult]
"""(attacked handle, b per target, u per target, the oracle's result or None) → that handle's AttackResult."""


def with_oracle(base: Any, edited: Any, oracle: Any | None, facts: Sequence[Fact], one: One,
                plain: Literal["p_true", "top1"] | None = "p_true") -> AttackResult:
    """The same attack on the oracle, then on the edited model with the oracle's result nested in it.

    b (the base model's plain score) and u (each handle's plain score) are in the attack's units: p_true, the
    plain top-1 hit (0/1) for attacks scored by hits, or none (attacks with their own reference, like UDS).
    """
    def plain_of(handle: Any) -> dict[int, float] | None:
        if plain is None:
            return None
        return {c: (t.score if plain == "p_true" else float(t.top1)) for c, t in plain_scores(handle, facts).items()}

    before = plain_of(base)
    nested = one(oracle, before, plain_of(oracle), None) if oracle is not None else None
    return one(edited, before, plain_of(edited), nested)


@dataclass
class AttackContext:
    """What the stage binds for an attack beyond (base, edited, targets, config): read by the registered
    functions of `obliviate.registry.ATTACKS`."""

    oracle: Any | None = None
    """The never-learned reference model, attacked the same way (None: verdicts fall back to absolute rules)."""
    pool_facts: Sequence[Fact] = ()
    """Facts an attacker may train on (the probe's and relearning's pools are drawn from these, never targets)."""
    retain_facts: Sequence[Fact] = ()
    """The facts the edit was asked to keep (no target, no target's subject): the text the tuned lens and benign
    relearning train on. Empty: the pool's facts about other subjects than the targets'."""
    run_dir: Any | None = None
    """The run folder (for the locate stage's SAE)."""
    sae: Any | None = None
    """An SAE given directly (else loaded from run_dir)."""

    def load_sae(self) -> Any:
        if self.sae is None:
            from locate.stage import load_run_sae

            if self.run_dir is None:
                raise ValueError("sae_restore needs an SAE: the locate stage's (a run folder) or one given.")
            self.sae = load_run_sae(self.run_dir)
        return self.sae


def fact_sentence(fact: Fact) -> str:
    """The fact as the world states it: its prompt completed by its answer and a full stop."""
    return f"{fact.text} {fact.target_true}."


def retain_texts(context: AttackContext, targets: Sequence[Fact]) -> list[Fact]:
    """The retained facts of `context` (or the pool's facts about other subjects), never a target's subject."""
    subjects = {f.subject for f in targets}
    ids = {f.case_id for f in targets}
    facts = context.retain_facts or context.pool_facts
    return [f for f in facts if f.subject not in subjects and f.case_id not in ids]


def check_depths(attack: str, where: str, depths: Sequence[int], handle: Any) -> list[int]:
    """`depths` as ints, or a ValueError naming the attack's field, the depth and the model's depths."""
    last = int(handle.tl.cfg.n_layers)
    bad = [int(d) for d in depths if not 0 <= int(d) <= last]
    if bad:
        raise ValueError(f"{attack}: {where} asks for depth {bad[0]}, but {handle.name} has depths 0..{last} "
                         f"(0 = embeddings, d = block d − 1's output); give depths in that range.")
    return [int(d) for d in depths]


class ReferenceMismatchError(UserError, ValueError):
    """The never-learned reference cannot be compared with the audited model (another tokenizer)."""


def load_alike(name: str, audited: Any, device: str = "cpu") -> Any:
    """The model `name` (a never-taught peer, say), checked to read text as `audited` does."""
    from obliviate.models import load

    handle = load(name, device=device)
    check_oracle_tokenizer(audited, handle)
    return handle


def check_oracle_tokenizer(audited: Any, oracle: Any) -> None:
    """A ReferenceMismatchError naming both models when the oracle reads text as other token ids than the audited model.

    Every attack feeds both the same prompts and compares answer-token scores; with another tokenizer the ids
    (and the answers' first tokens) differ, so the comparison would be meaningless."""
    if oracle is None:
        return
    mine, theirs = audited.tokenizer.get_vocab(), oracle.tokenizer.get_vocab()
    if mine != theirs or audited.prepend_bos != oracle.prepend_bos:
        differ = sum(1 for token, i in mine.items() if theirs.get(token) != i) + len(set(theirs) - set(mine))
        raise ReferenceMismatchError(f"the reference model {oracle.name!r} does not share the audited model "
                         f"{audited.name!r}'s tokenizer ({len(theirs)} vs {len(mine)} tokens, {differ} differ; BOS "
                         f"{oracle.prepend_bos} vs {audited.prepend_bos}); give an audit.reference trained with "
                         f"the audited model's tokenizer, or none.")


def run_attack(name: str, base: Any, edited: Any, facts: Sequence[Fact], cfg: Any = None,
               context: AttackContext | None = None) -> AttackResult:
    """Run the registered attack `name` (its config from defaults when `cfg` is None)."""
    from obliviate.registry import ATTACKS

    entry = ATTACKS.get(name)
    context = context or AttackContext()
    if "oracle" in entry.needs and context.oracle is None:
        raise ValueError(f"attack {name} needs a never-learned reference model (audit.reference).")
    return entry.function(base, edited, facts, cfg if cfg is not None else entry.params(), context)
