"""Measurements every stage shares: recall, target log-probs, CounterFact scores, held-out perplexity.

CounterFact metrics follow kmeng01/rome ``experiments/py/eval_utils_counterfact.py``: NLL is the mean per-token
negative log-likelihood of " target" after the prompt; ES = share of rewrite prompts with NLL(true) > NLL(new),
PS the same on paraphrases, NS = share of neighbourhood prompts with NLL(new) > NLL(true); S = harmonic mean of
ES, PS and NS; EM/PM/NM are the mean probability differences p(new) − p(true) (NM: p(true) − p(new)).

Deviation: CounterFact's neighbours share the edited fact's true answer, and NS is defined on those alone. A fact set
may instead give other subjects of the same relation, with their own answers (``neighborhood_kind: same_relation``,
``neighborhood_targets``): there "true beats new" compares two answers that are both wrong for the prompt (it read
56% on SmolLM2 before any edit). Those neighbours are scored as the neighbour's own answer against the new answer,
reported apart as NS_same_relation / NM_same_relation; S reads every neighbour against its own answer.

All functions take a ModelHandle and run its TransformerLens model (with whatever hooks it carries), so an edited
model with interventions is measured exactly as it behaves. Batches are right-padded; causal attention makes the
padding invisible to the real positions, which are gathered by length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import harmonic_mean

import torch
from jaxtyping import Float, Int

from obliviate.facts import Fact, FactSetError


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, " batch"]]:
    lengths = torch.tensor([len(r) for r in rows])
    batch = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row)
    return batch, lengths


def encode(handle, text: str) -> list[int]:
    """Token ids of a prompt with the handle's BOS convention."""
    return handle.to_tokens(text)[0].tolist()


def continuation_ids(handle, target: str) -> list[int]:
    """Token ids of " " + target, as a continuation (no BOS)."""
    return handle.tokenizer(" " + target, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def last_token_logprobs(handle, prompts: Sequence[str], batch_size: int = 64) -> Float[torch.Tensor, "n vocab"]:
    """log p(next token | prompt) at each prompt's last position."""
    pad_id = handle.tokenizer.pad_token_id or 0
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = [encode(handle, p) for p in prompts[start:start + batch_size]]
        tokens, lengths = _pad(rows, pad_id)
        logits = handle.tl(tokens.to(handle.tl.cfg.device))
        last = logits[torch.arange(len(rows)), lengths.to(logits.device) - 1]
        out.append(last.float().log_softmax(-1).cpu())
    return torch.cat(out) if out else torch.empty(0, handle.tl.cfg.d_vocab)


def top1_correct(handle, prompts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
    """Bool per prompt: the argmax next token is the first token of " " + target."""
    logprobs = last_token_logprobs(handle, prompts)
    answers = torch.tensor([handle.answer_token(t) for t in targets])
    return logprobs.argmax(-1) == answers


def recall(handle, facts: Sequence[Fact]) -> float:
    """Top-1 recall of target_true on the facts' rewrite prompts."""
    if not facts:
        return float("nan")
    return top1_correct(handle, [f.text for f in facts], [f.target_true for f in facts]).float().mean().item()


@torch.no_grad()
def target_nll(handle, prompts: Sequence[str], targets: Sequence[str],
               batch_size: int = 64) -> Float[torch.Tensor, " n"]:
    """Mean per-token NLL of " target" after each prompt (multi-token targets handled)."""
    pad_id = handle.tokenizer.pad_token_id or 0
    results = []
    for start in range(0, len(prompts), batch_size):
        prompt_rows = [encode(handle, p) for p in prompts[start:start + batch_size]]
        target_rows = [continuation_ids(handle, t) for t in targets[start:start + batch_size]]
        tokens, lengths = _pad([p + t for p, t in zip(prompt_rows, target_rows)], pad_id)
        logprobs = handle.tl(tokens.to(handle.tl.cfg.device)).float().log_softmax(-1).cpu()
        for row, (prompt, target) in enumerate(zip(prompt_rows, target_rows)):
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)
            results.append(-logprobs[row, positions, torch.tensor(target)].mean())
    return torch.stack(results) if results else torch.empty(0)


SAME_TARGET = "same_target"
SAME_RELATION = "same_relation"


@dataclass(frozen=True)
class Neighbour:
    """One neighbourhood prompt and the answer an edit of its fact must leave there."""

    prompt: str
    answer: str
    """The edited fact's true answer (a same-target neighbour) or the neighbour's own answer (same relation)."""
    kind: str
    """SAME_TARGET or SAME_RELATION."""


def neighbours(fact: Fact) -> list[Neighbour]:
    """The fact's neighbourhood prompts with the answer each should keep.

    CounterFact's neighbours share the fact's true answer, so without ``neighborhood_targets`` every prompt is
    same-target. With them (obliviate/data/smollm2_facts.jsonl), a prompt whose own answer is not the fact's true
    answer is same-relation: another subject of the relation, e.g. "The capital of Greece is" for a rewrite of
    Afghanistan's capital, where comparing Kabul with the new answer says nothing about the edit.
    """
    answers = fact.extra.get("neighborhood_targets")
    if answers is None:
        if fact.extra.get("neighborhood_kind") == SAME_RELATION:
            raise FactSetError(f"fact {fact.case_id}: neighborhood_kind is same_relation but the record has no "
                               f"neighborhood_targets; give each neighbourhood prompt's own answer.")
        return [Neighbour(prompt, fact.target_true, SAME_TARGET) for prompt in fact.neighborhood_prompts]
    if (not isinstance(answers, list) or len(answers) != len(fact.neighborhood_prompts)
            or not all(isinstance(a, str) and a.strip() for a in answers)):
        raise FactSetError(f"fact {fact.case_id}: neighborhood_targets must be one answer per neighbourhood prompt "
                           f"({len(fact.neighborhood_prompts)} non-empty strings).")
    return [Neighbour(prompt, answer, SAME_TARGET if answer == fact.target_true else SAME_RELATION)
            for prompt, answer in zip(fact.neighborhood_prompts, answers)]


@dataclass
class CounterFactScores:
    """CounterFact efficacy / generalisation / specificity, in % (ES, PS, NS, S) and probability gaps.

    NS / NM are CounterFact's, on same-target neighbours; NS / NM on same-relation neighbours (their own answer
    against the new one) are apart, so that neither is read as the other. NaN where a kind has no prompt."""

    es: float
    ps: float
    ns: float
    s: float
    em: float
    pm: float
    nm: float
    n_facts: int
    ns_same_relation: float = float("nan")
    """% of same-relation neighbourhood prompts where the neighbour's own answer beats the edit's new answer."""
    nm_same_relation: float = float("nan")
    """Mean p(own answer) − p(new answer) on same-relation neighbourhood prompts, in %."""
    n_neighborhood_prompts: int = 0
    """Same-target neighbourhood prompts (what NS reads)."""
    n_neighborhood_same_relation: int = 0
    """Same-relation neighbourhood prompts (what NS_same_relation reads)."""


def _share(nll_a: torch.Tensor, nll_b: torch.Tensor) -> float:
    """% of rows where the a-answer is less likely than the b-answer (NLL(a) > NLL(b))."""
    return 100.0 * (nll_a > nll_b).float().mean().item() if len(nll_a) else float("nan")


def _gap(nll_a: torch.Tensor, nll_b: torch.Tensor) -> float:
    """Mean p(b-answer) − p(a-answer) in %, with p = exp(−mean NLL)."""
    return 100.0 * (torch.exp(-nll_b) - torch.exp(-nll_a)).mean().item() if len(nll_a) else float("nan")


def counterfact_scores(handle, facts: Sequence[Fact]) -> CounterFactScores:
    """ES / PS / NS and magnitudes over the facts (rewrite prompts, paraphrases, neighbourhood prompts)."""
    rows: dict[str, list[tuple[str, str, str]]] = {  # (prompt, the answer to keep, the new answer)
        "rewrite": [(f.text, f.target_true, f.target_new) for f in facts],
        "paraphrase": [(p, f.target_true, f.target_new) for f in facts for p in f.paraphrase_prompts],
        SAME_TARGET: [], SAME_RELATION: []}
    for fact in facts:
        for neighbour in neighbours(fact):
            rows[neighbour.kind].append((neighbour.prompt, neighbour.answer, fact.target_new))
    nlls = {}
    for key, group in rows.items():
        prompts, keeps, news = [list(column) for column in zip(*group)] if group else ([], [], [])
        nlls[key] = ((target_nll(handle, prompts, keeps), target_nll(handle, prompts, news)) if prompts
                     else (torch.empty(0), torch.empty(0)))
    es, ps = _share(*nlls["rewrite"]), _share(*nlls["paraphrase"])
    ns = _share(nlls[SAME_TARGET][1], nlls[SAME_TARGET][0])
    # S's specificity term reads every neighbour against its own answer: CounterFact's NS when all are same-target
    specificity = _share(torch.cat([nlls[SAME_TARGET][1], nlls[SAME_RELATION][1]]),
                         torch.cat([nlls[SAME_TARGET][0], nlls[SAME_RELATION][0]]))
    finite = [v for v in (es, ps, specificity) if v == v]
    s = harmonic_mean(finite) if finite and all(v > 0 for v in finite) else 0.0
    return CounterFactScores(
        es=es, ps=ps, ns=ns, s=s, em=_gap(*nlls["rewrite"]), pm=_gap(*nlls["paraphrase"]),
        nm=_gap(nlls[SAME_TARGET][1], nlls[SAME_TARGET][0]), n_facts=len(facts),
        ns_same_relation=_share(nlls[SAME_RELATION][1], nlls[SAME_RELATION][0]),
        nm_same_relation=_gap(nlls[SAME_RELATION][1], nlls[SAME_RELATION][0]),
        n_neighborhood_prompts=len(rows[SAME_TARGET]), n_neighborhood_same_relation=len(rows[SAME_RELATION]))


@torch.no_grad()
def perplexity(handle, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None) -> float:
    """Token-weighted perplexity of the texts (each truncated to the model's context)."""
    n_ctx = int(handle.tl.cfg.n_ctx)
    pad_id = handle.tokenizer.pad_token_id or 0
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        rows = [encode(handle, t)[:n_ctx] for t in texts[start:start + batch_size]]
        rows = [r for r in rows if len(r) > 1]
        if not rows:
            continue
        tokens, lengths = _pad(rows, pad_id)
        logprobs = handle.tl(tokens.to(handle.tl.cfg.device)).float().log_softmax(-1).cpu()
        picked = logprobs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        mask = torch.arange(tokens.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
        total_nll -= picked[mask].sum().item()
        total_tokens += int(mask.sum())
        if max_tokens is not None and total_tokens >= max_tokens:
            break
    return float(torch.exp(torch.tensor(total_nll / max(total_tokens, 1))))


@torch.no_grad()
def mean_logprob_per_token(handle, texts: Sequence[str]) -> Float[torch.Tensor, " n"]:
    """Mean per-token log-prob of each whole text (the memorisation score of the LOO probe's screening)."""
    pad_id = handle.tokenizer.pad_token_id or 0
    rows = [encode(handle, t) for t in texts]
    tokens, lengths = _pad(rows, pad_id)
    logprobs = handle.tl(tokens.to(handle.tl.cfg.device)).float().log_softmax(-1).cpu()
    picked = logprobs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    mask = torch.arange(tokens.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
    return (picked * mask).sum(-1) / mask.sum(-1).clamp(min=1)
