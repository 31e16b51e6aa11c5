"""Recall and log-prob measurements on a plain Hugging Face model + tokenizer (no TransformerLens needed).

Used to check the world models when they are trained and in their tests. The conventions are those of
obliviate.metrics (which measures a ModelHandle, hooks included): no BOS unless asked, right padding with lengths
gathered per row, a target scored as the first token of " " + target, and the mean per-token log-prob of a text
taken over every token after the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float

from obliviate.world.relations import RELATIONS

PROMPT_FIELDS = ("prompt", "trained_paraphrases", "heldout_paraphrases", "neighborhood_prompts")


def load_world_model(folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a trained world folder, in eval mode, float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, tokenizer


def _encode(tokenizer, texts: Sequence[str], prepend_bos: bool) -> list[list[int]]:
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id, *r] if prepend_bos else r for r in rows]


def _logprobs(model, tokenizer, rows: list[list[int]]) -> Float[torch.Tensor, "batch pos vocab"]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    # right padding: causal attention already hides the pads from real positions; the mask only says so to HF
    return model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[str], *, prepend_bos: bool = False,
                        batch_size: int = 128) -> Float[torch.Tensor, "n vocab"]:
    """log p(next token | prompt) at each prompt's last position."""
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = _encode(tokenizer, prompts[start:start + batch_size], prepend_bos)
        logprobs = _logprobs(model, tokenizer, rows)
        out.append(logprobs[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])])
    return torch.cat(out)


def answer_ids(tokenizer, targets: Sequence[str]) -> list[int]:
    """The first token of " " + target for each target (the CounterFact scoring token)."""
    return [tokenizer(" " + t, add_special_tokens=False)["input_ids"][0] for t in targets]


def top1_hits(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], *,
              prepend_bos: bool = False) -> Bool[torch.Tensor, " n"]:
    """Whether the model's top-1 next token after each prompt is its target's first token."""
    predicted = next_token_logprobs(model, tokenizer, prompts, prepend_bos=prepend_bos).argmax(-1)
    return predicted == torch.tensor(answer_ids(tokenizer, targets))


def fact_prompts(records: Sequence[dict], field: str = "prompt",
                 target: str = "target_true") -> tuple[list[str], list[str]]:
    """(prompts, targets) of the records for one prompt field; neighbourhood prompts keep the record's target."""
    if field not in PROMPT_FIELDS:
        raise ValueError(f"field {field!r}: use one of {PROMPT_FIELDS}.")
    prompts, targets = [], []
    for record in records:
        rewrite = record["requested_rewrite"]
        texts = [rewrite["prompt"].format(rewrite["subject"])] if field == "prompt" else record[field]
        prompts += texts
        targets += [rewrite[target]["str"]] * len(texts)
    return prompts, targets


def recall(model, tokenizer, records: Sequence[dict], field: str = "prompt", *, prepend_bos: bool = False) -> float:
    """Top-1 recall of target_true over the records' prompts of one field (nan for no prompts)."""
    prompts, targets = fact_prompts(records, field)
    if not prompts:
        return float("nan")
    return top1_hits(model, tokenizer, prompts, targets, prepend_bos=prepend_bos).float().mean().item()


ANSWER_KINDS = ("own answer", "another subject's answer", "another relation's answer", "not an answer")


def answer_kinds(model, tokenizer, records: Sequence[dict], field: str = "heldout_paraphrases", *,
                 prepend_bos: bool = False) -> dict[str, float]:
    """What the top-1 next token after each prompt is, as shares of the prompts (ANSWER_KINDS, summing to 1).

    Tells a wrong answer that knows the relation but not the subject (another subject's answer of the relation
    asked) from a prompt whose relation was not understood (an answer of another relation) and from a continuation
    that is no answer at all (a function word such as "that" or "a"). Only the first is a failure of knowledge; the
    other two are failures to read the question. "own answer" is `recall`. The answer sets are those of the
    records' world (every relation's true answers among `records`).
    """
    prompts, targets, relations = [], [], []  # per record, so each prompt keeps its record's relation
    for record in records:
        texts, answers = fact_prompts([record], field)
        prompts += texts
        targets += answers
        relations += [record["relation_id"]] * len(texts)
    if not prompts:
        return {kind: float("nan") for kind in ANSWER_KINDS}
    owner: dict[int, str] = {}  # answer token → the relation it first answers
    true_answers = answer_ids(tokenizer, [record["requested_rewrite"]["target_true"]["str"] for record in records])
    for token, record in zip(true_answers, records):
        owner.setdefault(token, record["relation_id"])
    predicted = next_token_logprobs(model, tokenizer, prompts, prepend_bos=prepend_bos).argmax(-1).tolist()
    wanted = answer_ids(tokenizer, targets)
    counts = dict.fromkeys(ANSWER_KINDS, 0)
    for top, want, relation in zip(predicted, wanted, relations):
        kind = ("own answer" if top == want else "another subject's answer" if owner.get(top) == relation
                else "another relation's answer" if top in owner else "not an answer")
        counts[kind] += 1
    return {kind: n / len(prompts) for kind, n in counts.items()}


@torch.no_grad()
def mean_token_logprob(model, tokenizer, texts: Sequence[str], *, prepend_bos: bool = False,
                       batch_size: int = 64) -> Float[torch.Tensor, " n"]:
    """Mean per-token natural log-prob of each text (tokens after the first; with BOS, every token)."""
    out = []
    for start in range(0, len(texts), batch_size):
        rows = _encode(tokenizer, texts[start:start + batch_size], prepend_bos)
        logprobs = _logprobs(model, tokenizer, rows)
        for i, row in enumerate(rows):
            tokens = torch.tensor(row[1:])
            out.append(logprobs[i, torch.arange(len(row) - 1), tokens].mean())
    return torch.stack(out)


def frequency_prior(records: Sequence[dict]) -> float:
    """Mean over relations of the share of the relation's most common answer among the records: the recall of a
    model that knows the answer distribution but not the subjects."""
    shares = []
    for relation in RELATIONS:
        answers = [r["requested_rewrite"]["target_true"]["str"] for r in records
                   if r["relation_id"] == relation.relation_id]
        if answers:
            shares.append(max(answers.count(v) for v in set(answers)) / len(answers))
    return sum(shares) / len(shares)
