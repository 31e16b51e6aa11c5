"""Suppression: two edits that HIDE answers without erasing anything (the audit's calibration cases).

(a) ``logit``: an output-only `LogitPenalty` on the first token of each target's answer. Nothing inside the model
    changes; every internal read-out (logit lens, probes, relearning, quantization) still finds the fact.
(b) ``unembed``: a late steering hook that subtracts the answers' unembedding directions from the residual stream
    leaving the last block. The direction is the gradient of the answer's logit with respect to that residual, up
    to the final LayerNorm's scale: (γ ⊙ W_U[:, a]) centred (LayerNorm removes the mean), γ the final LN weight. The
    hook sits after every block, so only the read-out changes; intermediate layers are untouched.

Both are deliberately NOT erasures: an audit that scores them as "forgotten" is broken (cf. Patil, Hase & Bansal
2023 on logit-lens recovery; Jang et al. 2026, "Suppression or Deletion"). The hook is added at every position
(right-padded batches make "the last position" padding for most rows); at the last block each position's
residual only feeds its own logits, so this changes nothing but each position's next-token distribution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.hooks import AddVector, Intervention, LogitPenalty
from obliviate.registry import EDITS, Knob, Spec


@dataclass
class SuppressConfig:
    """Which suppression to apply and how hard."""

    kind: Literal["logit", "unembed"] = "logit"
    """logit: output-only LogitPenalty on the answer tokens; unembed: subtract the answers' unembedding
    directions from the last block's output residual."""
    penalty: float = 20.0
    """Logit penalty (kind="logit"), in nats."""
    unembed_scale: float = 1.0
    """kind="unembed": multiplies `penalty` for the residual shift (1.0: each answer's logit drops by about
    `penalty` nats to first order; the final LayerNorm's rescaling makes the real drop somewhat smaller)."""
    max_shift: float = 1.0
    """kind="unembed": cap on the shift's norm, in multiples of the mean residual norm at the last block (many
    answers' shifts add up; beyond about the residual's own norm the final norm washes everything out)."""
    use_target_new: bool = False
    """Also hide target_new (off: only the true answers are hidden)."""


def answer_tokens(handle: Any, facts: Sequence[Fact], use_target_new: bool = False) -> tuple[int, ...]:
    """Sorted unique first tokens of " " + target_true (and target_new if asked)."""
    ids = {handle.answer_token(f.target_true) for f in facts}
    if use_target_new:
        ids |= {handle.answer_token(f.target_new) for f in facts}
    return tuple(sorted(ids))


def unembedding_directions(model: Any, token_ids: Sequence[int]) -> Float[torch.Tensor, "n d"]:
    """g_a = ∂ logit_a / ∂ (normalised residual): γ ⊙ W_U[:, a], centred when the final norm is a LayerNorm."""
    w_u = model.W_U.detach().float().cpu()[:, list(token_ids)].T
    ln_w = getattr(getattr(model, "ln_final", None), "w", None)
    if ln_w is not None:
        w_u = w_u * ln_w.detach().float().cpu()
    if model.cfg.normalization_type in ("LN", "LNPre"):
        w_u = w_u - w_u.mean(-1, keepdim=True)  # LayerNorm centres the residual: the mean component is invisible
    return w_u


@torch.no_grad()
def _resid_scale(handle: Any, prompts: Sequence[str], hook_name: str) -> tuple[float, float]:
    """Mean RMS of the (centred) residual (the factor the final norm divides by) and its mean norm."""
    from edit.steering import hook_activations

    acts = hook_activations(handle, prompts, hook_name, "last")
    if handle.tl.cfg.normalization_type in ("LN", "LNPre"):
        acts = acts - acts.mean(-1, keepdim=True)
    return float(acts.pow(2).mean(-1).sqrt().mean()), float(acts.norm(dim=-1).mean())


def suppression_interventions(handle: Any, targets: Sequence[Fact], cfg: SuppressConfig) -> list[Intervention]:
    """The hook(s) that hide the targets' answers (see the module docstring)."""
    ids = answer_tokens(handle, targets, cfg.use_target_new)
    if cfg.kind == "logit":
        return [LogitPenalty(ids, penalty=cfg.penalty)]
    hook_name = f"blocks.{handle.n_layers - 1}.hook_resid_post"
    grads = unembedding_directions(handle.tl, ids)
    # a shift δ·g/‖g‖² of the residual moves logit_a by ≈ δ/rms(x): δ = penalty · rms drops it by
    # `penalty` nats
    vector = (grads / grads.pow(2).sum(-1, keepdim=True)).sum(0)
    rms, norm = _resid_scale(handle, [f.text for f in targets], hook_name)
    shift = vector * rms * cfg.penalty * cfg.unembed_scale
    if shift.norm() > cfg.max_shift * norm:
        shift = shift * (cfg.max_shift * norm / shift.norm())
    return [AddVector(hook_name, shift, scale=-1.0)]


def suppress_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact] = (),
                  cfg: SuppressConfig | None = None, *, layers: Sequence[int] | None = None) -> EditResult:
    """Hide the targets' answers at the output (calibration: the audit must NOT call this forgotten).

    `retain` and `layers` are accepted for the edit stage's uniform call and ignored: suppression acts at the
    output (logit) or at the last block's output (unembed) by design.
    """
    cfg = cfg or SuppressConfig()
    start = time.perf_counter()
    hooks = suppression_interventions(handle, targets, cfg)
    return EditResult(method="suppress", interventions=hooks, targets=[f.case_id for f in targets],
                      layers=[handle.n_layers - 1] if cfg.kind == "unembed" else [],
                      timings={"fit": time.perf_counter() - start},
                      metrics={"kind": cfg.kind, "n_answer_tokens": len(answer_tokens(handle, targets,
                                                                                        cfg.use_target_new))},
                      config=asdict(cfg))


@EDITS.register("suppress", SuppressConfig, spec=Spec(layers="none", knob=Knob(
    "penalty", 0.5, 64.0, doc="the answers' logit penalty in nats")))
def suppress_method(handle: Any, request: EditRequest, cfg: SuppressConfig) -> EditResult:
    """Output-only suppression of the targets' answers (a calibration case, not an erasure)."""
    return suppress_edit(handle, request.targets, request.retain, cfg)
