"""Unlearning depth score (UDS): how much of the knowledge an unlearned model's hidden states still carry.

Reference: gnueaj/unlearning-depth-score (`compute_uds.py`, two-stage activation patching). For each target the
prompt is followed by its answer (teacher forcing) and the score is the mean log-prob of the answer tokens in the
FULL model (the base, before unlearning). Layer by layer, the block's output residual at the answer span — the
positions whose logits predict the answer tokens, [len(prompt) − 1, len(prompt) − 1 + len(answer)) (the reference's
"span" scope; "boundary" patches only the first of them) — is replaced in the full model by that of

- stage 1, the RETAIN model (never learned the fact): Δ1_l = score(full) − score(full ← retain at l);
- stage 2, the UNLEARNED model: Δ2_l = score(full) − score(full ← unlearned at l).

Layers with Δ1_l > 0.05 (the reference's `delta_threshold`) are the knowledge-encoding layers, and

    UDS = Σ_l Δ1_l · clip(Δ2_l / Δ1_l, 0, 1) / Σ_l Δ1_l   over those layers

(None when no layer qualifies). Convention, as in the reference: UDS = 1 means the unlearned model's states
remove the knowledge as thoroughly as the retain model's (deep unlearning; the retain model against itself scores
exactly 1), UDS = 0 means they still carry all of it (the untouched full model scores exactly 0; so does an
output-only suppression, whose hidden states are the base's).

As a recovery attack the score per target is 1 − UDS: the share of the knowledge still readable from the
unlearned model's hidden states, in [0, 1]. The unlearned model is read with its hooks (its interventions are part
of its hidden states); the full and retain models must share its tokenizer (checked on every prompt).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float

from audit.attack_result import AttackContext, AttackResult, TargetScore, assemble, with_oracle
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class UDSConfig:
    """Where to patch and which layers count."""

    delta_threshold: float = 0.05
    """A layer encodes the knowledge when patching the retain model's state there lowers the score by more."""
    patch_scope: Literal["span", "boundary"] = "span"
    """Patch every answer-predicting position (span) or only the first (boundary)."""
    layers: tuple[int, ...] | None = None
    """Blocks whose output is patched (None: all)."""
    batch_size: int = 16


@dataclass
class FactDepth:
    """One target's UDS and its layer-wise deltas."""

    case_id: int
    uds: float | None
    full_score: float
    delta_retain: list[float] = field(default_factory=list)
    """Δ1 per patched layer."""
    delta_unlearned: list[float] = field(default_factory=list)
    """Δ2 per patched layer."""
    knowledge_layers: list[int] = field(default_factory=list)


def uds_from_deltas(delta_retain: Sequence[float], delta_unlearned: Sequence[float], threshold: float = 0.05
                    ) -> float | None:
    """Σ Δ1·clip(Δ2/Δ1, 0, 1) / Σ Δ1 over layers with Δ1 > threshold; None when no layer qualifies."""
    numerator = denominator = 0.0
    for d1, d2 in zip(delta_retain, delta_unlearned):
        if d1 <= threshold:
            continue
        denominator += d1
        numerator += d1 * min(max(d2 / d1, 0.0), 1.0)
    return numerator / denominator if denominator > 0 else None


def _answer_score(logprobs: Float[torch.Tensor, "batch pos vocab"], tokens: torch.Tensor,
                  spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mean log-prob of the answer tokens: position t predicts token t + 1."""
    out = []
    for row, (start, end) in enumerate(spans):
        positions = torch.arange(start, end)
        out.append(logprobs[row, positions, tokens[row, positions + 1]].mean())
    return torch.stack(out)


@torch.no_grad()
def depth_scores(full: Any, retain: Any, unlearned: Any, facts: Sequence[Fact], config: UDSConfig = UDSConfig()
                 ) -> dict[int, FactDepth]:
    """Two-stage patching per target (see the module docstring)."""
    layers = list(config.layers) if config.layers is not None else list(range(full.n_layers))
    names = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    pad_id = full.tokenizer.pad_token_id or 0
    out: dict[int, FactDepth] = {}
    for begin in range(0, len(facts), config.batch_size):
        batch = facts[begin:begin + config.batch_size]
        rows, spans = [], []
        for fact in batch:
            prompt, answer = encode(full, fact.text), continuation_ids(full, fact.target_true)
            for other in (retain, unlearned):
                if encode(other, fact.text) != prompt or continuation_ids(other, fact.target_true) != answer:
                    raise ValueError(f"UDS: {other.name} tokenises {fact.text!r} differently from {full.name}; "
                                     f"the three models must share a tokenizer.")
            rows.append(prompt + answer)
            spans.append((len(prompt) - 1, len(prompt) - 1 + len(answer)))
        tokens = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        for i, (row, (start, end)) in enumerate(zip(rows, spans)):
            tokens[i, :len(row)] = torch.tensor(row)
            mask[i, start:end if config.patch_scope == "span" else start + 1] = True
        device = full.tl.cfg.device
        tokens, mask = tokens.to(device), mask.to(device)
        full_score = _answer_score(full.tl(tokens).float().log_softmax(-1), tokens, spans)
        sources = {}
        for key, model in (("retain", retain), ("unlearned", unlearned)):
            _, cache = model.tl.run_with_cache(tokens, names_filter=lambda n: n in names)
            sources[key] = {name: cache[name] for name in names}
        deltas: dict[str, list[torch.Tensor]] = {"retain": [], "unlearned": []}
        for name in names:
            for key in ("retain", "unlearned"):
                source = sources[key][name]

                def patch(x: torch.Tensor, hook: Any = None, source: torch.Tensor = source) -> torch.Tensor:
                    return torch.where(mask[..., None], source.to(x.dtype), x)

                logprobs = full.tl.run_with_hooks(tokens, fwd_hooks=[(name, patch)]).float().log_softmax(-1)
                deltas[key].append(full_score - _answer_score(logprobs, tokens, spans))
        d1 = torch.stack(deltas["retain"], 1).cpu()  # batch layer
        d2 = torch.stack(deltas["unlearned"], 1).cpu()
        for i, fact in enumerate(batch):
            out[fact.case_id] = FactDepth(
                case_id=fact.case_id, uds=uds_from_deltas(d1[i].tolist(), d2[i].tolist(), config.delta_threshold),
                full_score=float(full_score[i]), delta_retain=d1[i].tolist(), delta_unlearned=d2[i].tolist(),
                knowledge_layers=[layers[j] for j in range(len(layers)) if d1[i, j] > config.delta_threshold])
    return out


def run_uds(base: Any, edited: Any, facts: Sequence[Fact], oracle: Any | None = None,
            config: UDSConfig = UDSConfig()) -> AttackResult:
    """UDS of `edited` against the retain model `oracle` (required), with base as the full model.

    The nested oracle result is the oracle patched against itself (UDS = 1, score 0 by construction), so the
    verdict can treat UDS like the other attacks.
    """
    if oracle is None:
        raise ValueError("UDS needs a retain (never-learned) model as `oracle`: it is stage 1's source.")

    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        depths = depth_scores(base, oracle, handle, facts, config)
        scores = {}
        for fact in facts:
            d = depths[fact.case_id]
            scores[fact.case_id] = TargetScore(fact.case_id, float("nan") if d.uds is None else 1.0 - d.uds,
                                               details=asdict(d))
        result = assemble("uds", "1 − UDS: share of the knowledge still in the hidden states (patching)",
                          asdict(config), facts, attacked=scores, oracle=nested,
                          timings={"total": time.perf_counter() - start}, handle_name=handle.name)
        values = [d.uds for d in depths.values() if d.uds is not None]
        result.metrics["mean_uds"] = sum(values) / len(values) if values else None
        result.metrics["n_without_knowledge_layers"] = float(sum(d.uds is None for d in depths.values()))
        return result

    return with_oracle(base, edited, oracle, facts, one, plain=None)


@ATTACKS.register("uds", UDSConfig, needs=("oracle",))
def uds_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: UDSConfig, ctx: AttackContext) -> AttackResult:
    """UDS: patch the retain model's hidden states in and measure how much knowledge is still there."""
    return run_uds(base, edited, facts, ctx.oracle, cfg)
