"""The one-cell-per-forward causal trace, as kmeng01/rome `experiments/causal_trace.py` runs it.

Kept as the yardstick for the batched trace in `locate/causal_trace.py` (tests require equality within 1e-5, and
bench/bench_trace.py measures the speed-up). Each (token, layer) cell is one full forward of 1 + n_samples rows:
row 0 is the clean run, rows 1… are corrupted, and hooks copy row 0's value at the cell's sites into the others —
ROME's `trace_with_patch`. Same corruption (`subject_corruption`: seeded noise or STR) as the batched trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float

from locate.causal_trace import (KINDS, SITE_HOOKS, TraceResult, corruption_label, noise_hook, score_dtype,
                                 subject_corruption, upcast, window_layers)
from locate.tokens import fact_subject_tokens
from obliviate.facts import Fact


@torch.no_grad()
def reference_restored_prob(handle, tokens: torch.Tensor, noise: torch.Tensor, subject: tuple[int, int],
                            answer: int, sites: Sequence[tuple[str, int]]) -> float:
    """p(answer) averaged over corrupted rows, with row 0's value at each (hook name, position) copied into them."""
    model = handle.tl
    batch = tokens[None].repeat(1 + noise.shape[0], 1)

    def restore(position: int):
        def hook(value: torch.Tensor, hook=None) -> torch.Tensor:
            value = value.clone()
            value[1:, position] = value[0, position]
            return value

        return hook

    hooks = [("hook_embed", noise_hook(noise, *subject))] + [(name, restore(pos)) for name, pos in sites]
    logits = model.run_with_hooks(batch, fwd_hooks=hooks)
    return upcast(logits[1:, -1]).softmax(-1).mean(0)[answer].item()


def reference_trace_fact(handle, fact: Fact, *, noise_std: float, kinds: Sequence[str] = KINDS,
                         n_samples: int = 10, window: int = 10, seed: int = 0,
                         positions: Sequence[int] | None = None,
                         layers: Sequence[int] | None = None,
                         replacements: Sequence[Sequence[int]] | None = None) -> dict[str, TraceResult]:
    """ROME's trace: one forward per (kind, token, layer) cell. Slow by design. `replacements`: STR corruption."""
    model = handle.tl
    n_layers = model.cfg.n_layers
    subject = fact_subject_tokens(handle, fact)
    tokens = torch.tensor(subject.token_ids, device=model.cfg.device)
    noise = subject_corruption(handle, fact, subject, noise_std=noise_std, n_samples=n_samples, seed=seed,
                               replacements=replacements)
    n_samples = noise.shape[0]
    noise_std, corruption = corruption_label(noise_std, replacements)
    answer = handle.answer_token(fact.target_true)
    span = (subject.start, subject.end)
    low = reference_restored_prob(handle, tokens, noise, span, answer, [])
    with torch.no_grad():
        high = upcast(model(tokens[None])[0, -1]).softmax(-1)[answer].item()
    n_pos = len(tokens)
    positions = list(range(n_pos)) if positions is None else [p % n_pos for p in positions]
    layers = list(range(n_layers)) if layers is None else [l % n_layers for l in layers]
    results = {}
    for kind in kinds:
        scores: Float[torch.Tensor, "pos layer"] = torch.full((n_pos, n_layers), float("nan"),
                                                                       dtype=score_dtype(model))
        for t in positions:
            for layer in layers:
                restored = [layer] if kind == "resid" else list(window_layers(layer, n_layers, window))
                sites = [(SITE_HOOKS[kind].format(l), t) for l in restored]
                scores[t, layer] = reference_restored_prob(handle, tokens, noise, span, answer, sites)
        results[kind] = TraceResult(
            case_id=fact.case_id, kind=kind, scores=scores, low=low, high=high,
            tokens=[handle.tokenizer.decode([i]) for i in tokens.tolist()], subject_range=span,
            answer=fact.target_true, answer_token=answer, window=window, n_samples=n_samples, noise_std=noise_std,
            seed=seed, corruption=corruption)
    return results
