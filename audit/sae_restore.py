"""SAE-feature restoration: put the target's expert features back and see whether the answer returns.

Jang et al. (2026), "Suppression or Deletion": at the layer where the fact is located, encode the unlearned model's
activation with a sparse autoencoder and move the target's *expert features* back towards their values in the
original model,

    z_e ← z_e(unlearned) + α · (z_e(original) − z_e(unlearned)),   α ∈ {1, 5, 10},

then decode — keeping the SAE's error term, x' = decode(z') + (x − decode(z)), so with α = 0 the forward pass is
unchanged — and continue the forward pass of the unlearned model. If the answer comes back, the unlearned model
still computes with the information and only the features' values were suppressed; if the downstream computation
was deleted, restoring the features does not help.

Expert features of a target: the top `n_features` by attribution z_f · ∂logit(answer)/∂z_f on the ORIGINAL model
at the read position (`locate.sae_features.feature_attribution`, activation × gradient), or a ranking the
caller passes. The SAE is any sae-lens SAE with `cfg.metadata.hook_name` set (`locate.sae_features.train_sae`
trains one offline on the base model).

Read/restore position: the last subject token (`position="subject"`, where the located layer's fact recall
happens) or the prompt's last token. Score per target: p_true under the best α (each α in `variants`);
b and u are the plain p_true of base and handle. An output-only edit (LogitPenalty) has z(unlearned) = z(original),
so restoration changes nothing there: this attack looks for suppression *inside* the model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float

from audit.attack_result import (AttackContext, AttackResult, TargetScore, assemble, stats_from_logprobs,
                                 with_oracle)
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class SaeRestoreConfig:
    """How many features to restore, how far, and where."""

    alphas: tuple[float, ...] = (1.0, 5.0, 10.0)
    """Restoration strengths α (Jang et al.: 1, 5, 10)."""
    n_features: int = 10
    """Expert features per target (top by attribution on the original model)."""
    position: Literal["subject", "last"] = "subject"
    """Token position whose activation is encoded, restored and decoded."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


def _hook_name(sae: Any) -> str:
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not name:
        raise ValueError("the SAE has no cfg.metadata.hook_name; set the hook it reads "
                         "(e.g. blocks.2.hook_resid_post).")
    return str(name)


def _positions(handle: Any, facts: Sequence[Fact], position: str) -> list[int]:
    if position == "last":
        return [len(encode(handle, f.text)) - 1 for f in facts]
    from locate.activations import last_subject_token_positions

    return last_subject_token_positions(handle, facts)


def expert_features(base: Any, sae: Any, facts: Sequence[Fact], n_features: int,
                    position: Literal["subject", "last"] = "subject") -> dict[int, list[int]]:
    """Per target: the top features by attribution on the original model (locate.sae_features)."""
    from locate.sae_features import feature_attribution

    out = {}
    for fact in facts:
        ranking, _ = feature_attribution(base, sae, [fact], position=position, top_k=n_features)
        out[fact.case_id] = list(ranking.features)
    return out


@torch.no_grad()
def _activations(handle: Any, texts: Sequence[str], positions: Sequence[int], hook_name: str
                 ) -> Float[torch.Tensor, "n d"]:
    from locate.activations import collect_at_hooks

    return collect_at_hooks(handle, texts, [hook_name], positions=list(positions))[0]


@torch.no_grad()
def restored_answer_stats(handle: Any, sae: Any, facts: Sequence[Fact], z_original: Float[torch.Tensor, "n d_sae"],
                          features: Sequence[Sequence[int]], alpha: float, positions: Sequence[int]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(p_true, top1, rank) of each target with its features restored by α at its position (one row per fact)."""
    hook_name = _hook_name(sae)
    pad_id = handle.tokenizer.pad_token_id or 0
    prompts = [encode(handle, f.text) for f in facts]
    answers = [continuation_ids(handle, f.target_true) for f in facts]
    rows = [p + a for p, a in zip(prompts, answers)]
    tokens = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    index = torch.arange(len(rows))
    pos = torch.tensor(list(positions))
    mask = torch.zeros(len(rows), sae.W_dec.shape[0], dtype=torch.bool)
    for i, feats in enumerate(features):
        mask[i, list(feats)] = True

    def restore(activation: torch.Tensor, hook: Any = None) -> torch.Tensor:
        x = activation[index, pos]
        z = sae.encode(x.to(sae.W_dec.dtype))
        error = x - sae.decode(z).to(x.dtype)
        target = z + alpha * (z_original.to(z) - z)
        z_new = torch.where(mask.to(z.device), target, z)
        patched = activation.clone()
        patched[index, pos] = sae.decode(z_new).to(x.dtype) + error
        return patched

    logprobs = handle.tl.run_with_hooks(tokens.to(handle.tl.cfg.device),
                                        fwd_hooks=[(hook_name, restore)]).float().log_softmax(-1).cpu()
    stats = stats_from_logprobs(logprobs, prompts, answers)
    return stats.p_true, stats.top1, stats.rank


@dataclass
class RestoreOutcome:
    scores: dict[int, TargetScore] = field(default_factory=dict)
    variants: dict[str, dict[int, float]] = field(default_factory=dict)


def sae_restore_scores(handle: Any, base: Any, sae: Any, facts: Sequence[Fact],
                       config: SaeRestoreConfig = SaeRestoreConfig(),
                       features: Mapping[int, Sequence[int]] | None = None) -> RestoreOutcome:
    """Restore each target's expert features in `handle` towards `base`'s values; p_true per α and the best."""
    hook_name = _hook_name(sae)
    if features is None:
        features = expert_features(base, sae, facts, config.n_features, config.position)
    texts = [f.text for f in facts]
    base_positions = _positions(base, facts, config.position)
    positions = _positions(handle, facts, config.position)
    if base_positions != positions:
        raise ValueError("SAE restore: the base and the attacked handle tokenise the prompts differently.")
    x_original = _activations(base, texts, positions, hook_name)
    with torch.no_grad():
        z_original = sae.encode(x_original.to(sae.W_dec.device, sae.W_dec.dtype))
    feats = [list(features[f.case_id]) for f in facts]
    outcome = RestoreOutcome()
    best: dict[int, tuple[float, bool, int, float]] = {}
    for alpha in config.alphas:
        p, top1, rank = restored_answer_stats(handle, sae, facts, z_original, feats, alpha, positions)
        name = f"alpha={alpha:g}"
        outcome.variants[name] = {}
        for i, fact in enumerate(facts):
            outcome.variants[name][fact.case_id] = float(p[i])
            if fact.case_id not in best or float(p[i]) > best[fact.case_id][0]:
                best[fact.case_id] = (float(p[i]), bool(top1[i]), int(rank[i]), alpha)
    for fact, feat in zip(facts, feats):
        p_best, top1_best, rank_best, alpha_best = best[fact.case_id]
        outcome.scores[fact.case_id] = TargetScore(fact.case_id, p_best, p_best, top1_best, rank_best,
                                                   {"best_alpha": alpha_best, "features": feat,
                                                    "hook_name": hook_name})
    return outcome


def run_sae_restore(base: Any, edited: Any, facts: Sequence[Fact], sae: Any, oracle: Any | None = None,
                    config: SaeRestoreConfig = SaeRestoreConfig(),
                    features: Mapping[int, Sequence[int]] | None = None) -> AttackResult:
    """SAE-feature restoration on `edited` (and the same on `oracle`) towards the base model's feature values."""
    if features is None:
        features = expert_features(base, sae, facts, config.n_features, config.position)

    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        outcome = sae_restore_scores(handle, base, sae, facts, config, features)
        result = assemble("sae_restore", "p_true with the target's expert SAE features restored (best α)",
                          asdict(config), facts, attacked=outcome.scores, unlearned=unlearned, before=before,
                          variants=outcome.variants, oracle=nested, timings={"total": time.perf_counter() - start},
                          handle_name=handle.name, min_gap=config.min_gap)
        result.config["hook_name"] = _hook_name(sae)
        return result

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("sae_restore", SaeRestoreConfig, needs=("sae",))
def sae_restore_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: SaeRestoreConfig, ctx: AttackContext
                       ) -> AttackResult:
    """SAE restoration: set the targets' expert SAE features back to the base model's values."""
    return run_sae_restore(base, edited, facts, ctx.load_sae(), ctx.oracle, cfg)
