"""Relearning attack: fine-tune a few steps on OTHER facts, then ask for the forgotten ones (after Deeb & Roger 2024).

"Do Unlearning Methods Remove Information from Language Model Weights?" (Deeb & Roger 2024) retrain the unlearned
model on some of the forgotten facts and find most of the pre-unlearning accuracy on the others come back — the
information was still in the weights. That attack itself is audit/heldout_relearn.py; this one trains on facts of
the targets' relations that were never unlearned (other subjects' retained facts): it asks whether relearning the
task re-opens the targets. Whether relearning recovers *knowledge* or just *teaches* the answer format is told by
running the same fine-tuning on a model that never learned the facts (the oracle, `world-retain`): only recovery
beyond the oracle's counts.

Procedure: a deep copy of the handle's TransformerLens model (its permanent hooks re-attached, so the edit's
interventions stay in the forward pass; the on-disk weights and the handle's own model are never touched) is
fine-tuned for `steps` AdamW steps on batches of the relearning facts' prompts (rewrite prompt and paraphrases)
with the loss = mean NLL of " " + target_true (teacher forcing on the answer tokens only). The relearning facts
must be disjoint from the targets in case id AND subject (asserted): relearning never sees a target's subject.

Score per target: p_true of the target on its rewrite prompt after relearning (b and u: plain p_true of base and
handle).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from audit.attack_result import (AttackContext, AttackResult, TargetScore, assemble, clone_tl, plain_scores,
                                 with_oracle, with_tl)
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class RelearnConfig:
    """How the attacker fine-tunes."""

    steps: int = 10
    """Optimiser steps (AuditConfig.relearn_steps)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 16
    """Prompts per step."""
    weight_decay: float = 0.0
    include_paraphrases: bool = True
    """Train on each relearning fact's paraphrase prompts too."""
    seed: int = 0
    """Seed of the batch order."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


class TargetLeakError(AssertionError):
    """A relearning fact shares a case id or a subject with a target."""


def check_disjoint(targets: Sequence[Fact], relearn_facts: Sequence[Fact]) -> None:
    """Raise TargetLeakError if relearning would see a target (same case id or same subject)."""
    ids = {f.case_id for f in targets} & {f.case_id for f in relearn_facts}
    subjects = {f.subject for f in targets} & {f.subject for f in relearn_facts}
    if ids or subjects:
        raise TargetLeakError(f"relearning set overlaps the targets: case ids {sorted(ids)[:5]}, subjects "
                              f"{sorted(subjects)[:5]}; relearn only on other subjects' facts.")


def relearn_pool(all_facts: Sequence[Fact], targets: Sequence[Fact]) -> list[Fact]:
    """Facts of the targets' relations whose subjects are not targets' subjects."""
    relations = {f.relation_id for f in targets}
    subjects = {f.subject for f in targets}
    return [f for f in all_facts if f.relation_id in relations and f.subject not in subjects]


def answer_examples(handle: Any, facts: Sequence[Fact], include_paraphrases: bool
                    ) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of each fact's rewrite prompt (and paraphrases) with " " + its true answer."""
    out = []
    for fact in facts:
        answer = continuation_ids(handle, fact.target_true)
        prompts = [fact.text, *(fact.paraphrase_prompts if include_paraphrases else ())]
        out += [(encode(handle, p), answer) for p in prompts]
    return out


def relearned_tl(handle: Any, relearn_facts: Sequence[Fact], config: RelearnConfig = RelearnConfig(),
                 targets: Sequence[Fact] = ()) -> tuple[Any, list[float]]:
    """A fine-tuned copy of `handle.tl` (hooks kept) and its loss per step; `targets` are checked to be unseen."""
    check_disjoint(targets, relearn_facts)
    if not relearn_facts:
        raise ValueError("relearning needs at least one fact outside the targets.")
    return fine_tuned_copy(handle, answer_examples(handle, relearn_facts, config.include_paraphrases), config)


def fine_tuned_copy(handle: Any, examples: Sequence[tuple[list[int], list[int]]], config: Any
                    ) -> tuple[Any, list[float]]:
    """A copy of `handle.tl` (hooks kept) fine-tuned on (context ids, continuation ids) pairs, the loss on the
    continuation only; `config` gives steps, lr, batch_size, weight_decay and seed. The handle is never touched."""
    model = clone_tl(handle.tl)
    model.train()
    for param in model.parameters():
        param.requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    pad_id = handle.tokenizer.pad_token_id or 0
    losses = []
    order = torch.randperm(len(examples), generator=generator).tolist()
    cursor = 0
    for _ in range(config.steps):
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(examples), generator=generator).tolist(), 0
        batch = [examples[i] for i in order[cursor:cursor + config.batch_size]]
        cursor += config.batch_size
        rows = [p + a for p, a in batch]
        tokens = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
        labels = torch.full_like(tokens, -100)
        for i, (prompt, answer) in enumerate(batch):
            tokens[i, :len(rows[i])] = torch.tensor(rows[i])
            labels[i, len(prompt) - 1:len(prompt) - 1 + len(answer)] = torch.tensor(answer)
        with torch.enable_grad():
            logits = model(tokens.to(model.cfg.device))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(),
                                                     labels.flatten().to(logits.device), ignore_index=-100)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, losses


def relearn_scores(handle: Any, targets: Sequence[Fact], relearn_facts: Sequence[Fact],
                   config: RelearnConfig = RelearnConfig()) -> tuple[dict[int, TargetScore], list[float]]:
    """Targets' p_true / top-1 / rank after relearning a copy of `handle` on `relearn_facts`."""
    model, losses = relearned_tl(handle, relearn_facts, config, targets)
    return plain_scores(with_tl(handle, model), targets), losses


def run_relearn(base: Any, edited: Any, facts: Sequence[Fact], relearn_facts: Sequence[Fact],
                oracle: Any | None = None, config: RelearnConfig = RelearnConfig()) -> AttackResult:
    """Relearning attack on `edited` (and the same on `oracle`); never trains on a target's subject."""
    check_disjoint(facts, relearn_facts)
    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        scores, losses = relearn_scores(handle, facts, relearn_facts, config)
        result = assemble("relearn", f"p_true after {config.steps} fine-tuning steps on other facts",
                          asdict(config), facts, attacked=scores, unlearned=unlearned, before=before, oracle=nested,
                          timings={"total": time.perf_counter() - start}, handle_name=handle.name,
                          min_gap=config.min_gap)
        result.metrics["loss_first"], result.metrics["loss_last"] = losses[0], losses[-1]
        result.config["n_relearn_facts"] = len(relearn_facts)
        return result

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("relearn", RelearnConfig)
def relearn_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: RelearnConfig, ctx: AttackContext
                   ) -> AttackResult:
    """Relearning: fine-tune on other facts (never a target's subject) and see whether the targets come back."""
    return run_relearn(base, edited, facts, relearn_pool(ctx.pool_facts, facts), ctx.oracle, cfg)
