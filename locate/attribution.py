"""Attribution patching: the causal-trace map from gradients (Nanda 2023; AtP, Kramár et al. 2024).

A linear estimate of every activation patch at once. Nanda's "attribution patching" and AtP write the effect of
patching node n as (n_patch − n_base) · ∂metric/∂n evaluated at the base run. Which run is the base decides what
is estimated:

- ``direction="denoise"`` (default): base = the corrupted run, patch = the clean value, so the estimate is of
  p(corrupted with n restored) − p(corrupted) — exactly the causal trace's indirect effect. The gradient is taken
  per noise sample and the metric is the trace's (p(answer) averaged over samples).
- ``direction="noise"``: base = the clean run (the form of Nanda 2023 and Kramár et al. 2024, AtP's usual setting); it
  estimates p(clean with n corrupted) − p(clean), which we negate so that larger still means "more important"; to
  first order it agrees with "denoise".

All three kinds come from one batched forward (row 0 clean, rows 1… the trace's corrupted copies, with the same
seeded noise — the "2 forwards") and one backward. A window restoration (MLP / attention over [L − 5, L + 5)) is
estimated as the sum of the per-layer estimates over the window, the first-order estimate of patching them jointly.
AtP*'s QK-fix and GradDrop are not implemented: the sites here are whole sublayer outputs and residuals, not
individual attention keys/queries. Agreement with the exact trace is reported as a Spearman correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float

from locate.causal_trace import (KINDS, SITE_HOOKS, TraceResult, corruption_label, noise_hook, subject_corruption,
                                 upcast, window_layers)
from locate.tokens import fact_subject_tokens
from obliviate.facts import Fact


@dataclass
class AttributionResult:
    """AtP estimates of the trace's indirect effects for one fact, per kind."""

    case_id: int
    effects: dict[str, Float[torch.Tensor, "pos layer"]]
    """kind → estimated p(restored) − p(corrupted) per (token, layer)."""
    low: float
    high: float
    tokens: list[str]
    subject_range: tuple[int, int]
    answer: str
    answer_token: int
    window: int
    n_samples: int
    noise_std: float
    seed: int
    direction: str
    corruption: str = "noise"

    def scores(self, kind: str) -> Float[torch.Tensor, "pos layer"]:
        """Estimated restored p(answer), on the trace's scale (corrupted p + estimated effect)."""
        return self.low + self.effects[kind]

    def peak(self, kind: str) -> tuple[int, int]:
        """(layer, token position) of the largest estimated effect."""
        n_layers = self.effects[kind].shape[1]
        position, layer = divmod(int(self.effects[kind].argmax()), n_layers)
        return layer, position

    def as_trace(self, kind: str) -> TraceResult:
        """The estimate shaped as a TraceResult (for plots and peak summaries)."""
        return TraceResult(case_id=self.case_id, kind=kind, scores=self.scores(kind), low=self.low, high=self.high,
                           tokens=self.tokens, subject_range=self.subject_range, answer=self.answer,
                           answer_token=self.answer_token, window=self.window, n_samples=self.n_samples,
                           noise_std=self.noise_std, seed=self.seed, corruption=self.corruption)


def attribution_patch_fact(handle, fact: Fact, *, noise_std: float, kinds: Sequence[str] = KINDS,
                           n_samples: int = 10, window: int = 10, seed: int = 0,
                           direction: Literal["denoise", "noise"] = "denoise",
                           replacements: Sequence[Sequence[int]] | None = None) -> AttributionResult:
    """AtP estimates of all (kind, token, layer) restorations of one fact from one forward and one backward.

    `replacements`: corrupt by symmetric token replacement, as `trace_fact` does."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}.")
    model = handle.tl
    n_layers = model.cfg.n_layers
    subject = fact_subject_tokens(handle, fact)
    tokens = torch.tensor(subject.token_ids, device=model.cfg.device)
    noise = subject_corruption(handle, fact, subject, noise_std=noise_std, n_samples=n_samples, seed=seed,
                               replacements=replacements)
    n_samples = noise.shape[0]
    noise_std, corruption = corruption_label(noise_std, replacements)
    answer = handle.answer_token(fact.target_true)
    batch = tokens[None].repeat(1 + n_samples, 1)
    acts: dict[str, torch.Tensor] = {}
    add_noise = noise_hook(noise, subject.start, subject.end)

    def embed_hook(value: torch.Tensor, hook) -> torch.Tensor:
        # a graph root of our own: gradients flow to the activations whether or not the weights require grad
        return add_noise(value.detach()).requires_grad_(True)

    def keep(value: torch.Tensor, hook) -> None:
        acts[hook.name] = value

    names = [SITE_HOOKS[k].format(layer) for k in kinds for layer in range(n_layers)]
    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", embed_hook)] + [(n, keep) for n in names]):
        probs = upcast(model(batch)[:, -1]).softmax(-1)[:, answer]
        # rows are independent, so one backward of (clean p + mean corrupted p) gives each run's own gradient
        grads = dict(zip(names, torch.autograd.grad(probs[0] + probs[1:].mean(), [acts[n] for n in names])))
    effects = {}
    for kind in kinds:
        per_layer = []
        for layer in range(n_layers):
            name = SITE_HOOKS[kind].format(layer)
            value, grad = acts[name].detach(), grads[name]
            delta = value[0:1] - value[1:]  # clean − corrupted, per sample
            if direction == "denoise":
                node = (delta * grad[1:]).sum(-1).sum(0)  # the 1/n of the mean is inside the gradient
            else:
                node = (delta * grad[0:1]).sum(-1).mean(0)  # −(corrupted − clean)·∇ at clean
            per_layer.append(node)
        node_effects = torch.stack(per_layer, dim=1).cpu()  # [pos, layer]
        if kind != "resid":
            node_effects = torch.stack([node_effects[:, list(window_layers(layer, n_layers, window))].sum(1)
                                        for layer in range(n_layers)], dim=1)
        effects[kind] = node_effects
    return AttributionResult(
        case_id=fact.case_id, effects=effects, low=probs[1:].mean().item(), high=probs[0].item(),
        tokens=[handle.tokenizer.decode([i]) for i in subject.token_ids], subject_range=(subject.start, subject.end),
        answer=fact.target_true, answer_token=answer, window=window, n_samples=n_samples, noise_std=noise_std,
        seed=seed, direction=direction, corruption=corruption)


def spearman_agreement(attribution: AttributionResult, traces: dict[str, TraceResult], *,
                       from_subject: bool = False) -> dict[str, float]:
    """Spearman ρ between the AtP estimates and the exact trace's effects, per kind (over traced cells).

    `from_subject=True` leaves out positions before the subject, where both are exactly zero effect and only
    add ties.
    """
    from scipy.stats import spearmanr

    out = {}
    for kind, trace in traces.items():
        if kind not in attribution.effects:
            continue
        exact, estimate = trace.indirect_effect, attribution.effects[kind]
        if from_subject:
            exact, estimate = exact[trace.subject_range[0]:], estimate[trace.subject_range[0]:]
        mask = ~torch.isnan(exact)
        out[kind] = float(spearmanr(exact[mask].numpy(), estimate[mask].numpy()).statistic)
    return out
