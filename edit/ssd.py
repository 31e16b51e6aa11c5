"""Selective Synaptic Dampening (SSD): shrink the weights far more important to the forget facts than to the data.

Foster, Schoepf & Brintrup, AAAI 2024, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening"; reference if-loops/selective-synaptic-dampening ``ssd.py`` (``ParameterPerturber``). No gradient step:
1. importance I = the diagonal of the Fisher information, estimated as the reference does: the squared gradient of
   each batch's mean loss, averaged over batches (``calc_importance``) — I_F on the forget facts, I_D on the
   training data D (the reference's ``full_train_dl``: forget and retain facts together; `data="retain"` uses the
   retain facts alone);
2. every parameter with I_F > α·I_D is multiplied by β = min(λ·I_D / I_F, 1) (``modify_weight``: exponent 1,
   lower bound 1), every other parameter is left exactly as it was.
Reference defaults α = 10 (``selection_weighting``) and λ = 1 (``dampening_constant``). The loss here is the mean
NLL of the answer tokens after each fact's prompt (the classifier's cross-entropy in the reference); batches are
taken in order (the importance is an average, the order does not change it), and both estimates use one batch
size, at most the number of forget prompts: the expected squared batch gradient is the squared mean gradient plus
the per-example variance over the batch size, so a forget set of 4 facts in one batch of 4 weighed against D in
batches of 32 looks important everywhere (with that mismatch, α = 10 on 4 world facts took retain recall to
0.03). With λ = 1, α < 1 selects parameters whose β is 1: α below λ changes nothing more, so the knob's range
starts at λ.

Measured on the world model (forget split, 120 facts; I_D on all 1,200 facts; recall on the forget facts and
300 retain facts, 0.96 / 0.96 before; λ = 1): α = 20 selects 6 of 1.3 M weights and changes no recall; α = 10
(the reference's) 38 k weights → forget 0.88, retain 0.96; α = 8 → 0.61 / 0.89; α = 7 → 0.38 / 0.80;
α = 5 → 0.13 / 0.45; α = 1 → 0.01 / 0.03. λ = 0.1 instead of 1 moves forget recall by at most 0.08. No weight
has I_F / I_D much above 20 here (D is ten times the forget set), hence the knob's range [1, 20].
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from edit.baselines import _fact_prompts, _layer_index, _trainable, batch_gradients
from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec

Importance = dict[str, Float[torch.Tensor, "..."]]
"""HF parameter name → per-coordinate importance (same shape as the parameter)."""


@dataclass
class SSDConfig:
    """SSD's selection and dampening (reference defaults: α = 10, λ = 1)."""

    alpha: float = 10.0
    """α, selection weighting: a parameter is dampened when I_F > α·I_D (lower α selects more)."""
    dampening: float = 1.0
    """λ, dampening constant: a selected parameter is multiplied by min(λ·I_D / I_F, 1)."""
    data: Literal["full", "retain"] = "full"
    """D for I_D: the forget and retain facts together (the reference's full training set), or the retain facts."""
    batch_size: int = 32
    """Prompts per batch of the importance estimates, the same for I_F and I_D (I is a squared batch gradient);
    a forget set with fewer prompts sets the batch size of both."""
    use_paraphrases: bool = False
    """Estimate the importances on the facts' paraphrase prompts too."""
    params: Literal["all", "mlp"] = "all"
    """Which weights may be dampened: all (the reference) or only MLP weights."""

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        check_range("alpha", self.alpha, minimum=1e-12, fix="α is a positive multiple of I_D")
        check_range("dampening", self.dampening, minimum=1e-12, fix="λ is a positive multiple of I_D / I_F")
        check_range("batch_size", self.batch_size, minimum=1)


def importance(handle: Any, model: torch.nn.Module, names: Sequence[str], facts: Sequence[Fact], batch_size: int,
               paraphrases: bool = False) -> Importance:
    """Mean over batches of (∂ mean answer NLL / ∂θ)² for the parameters `names` of `model`."""
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(params[name], dtype=torch.float32) for name in names}
    n_batches = 0
    for grads in batch_gradients(handle, model, names, facts, batch_size, paraphrases):
        for name, grad in zip(names, grads):
            if grad is not None:
                total[name] += grad.float() ** 2
        n_batches += 1
    return {name: value / n_batches for name, value in total.items()}


def dampen(weights: Mapping[str, torch.Tensor], forget: Importance, data: Importance, alpha: float,
           dampening: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(new tensors of the weights that change, selection mask of every weight): θ·min(λ·I_D / I_F, 1) where
    I_F > α·I_D, θ elsewhere."""
    changed, selected = {}, {}
    for name, theta in weights.items():
        i_f, i_d = forget[name].to(theta.device), data[name].to(theta.device)
        chosen = i_f > alpha * i_d  # implies I_F > 0: β is finite where it is used
        selected[name] = chosen
        if not chosen.any():
            continue
        beta = torch.where(chosen, (dampening * i_d / i_f).clamp(max=1.0), torch.ones_like(i_f))
        new = torch.where(chosen, theta * beta.to(theta.dtype), theta)
        if not torch.equal(new, theta):
            changed[name] = new
    return changed, selected


def ssd_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: SSDConfig | None = None, *,
             layers: Sequence[int] | None = None) -> EditResult:
    """SSD on a copy of `handle.hf` (gradients need a model of our own); the handle is not modified."""
    cfg = cfg or SSDConfig()
    if not targets:
        raise ValueError("ssd needs at least one forget fact.")
    if cfg.data == "retain" and not retain:
        raise ValueError("ssd with data='retain' needs retain facts.")
    start = time.perf_counter()
    model = copy.deepcopy(handle.hf).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    names = [name for name, _ in _trainable(model, cfg.params, layers)]
    # one batch size for both: a squared batch gradient grows as the batch shrinks (its noise is not averaged
    # away), so a forget set smaller than a batch must not be weighed against D in bigger batches
    batch_size = min(cfg.batch_size, len(_fact_prompts(targets, cfg.use_paraphrases)[0]))
    i_forget = importance(handle, model, names, targets, batch_size, cfg.use_paraphrases)
    data_facts = [*targets, *retain] if cfg.data == "full" else list(retain)
    i_data = importance(handle, model, names, data_facts, batch_size, cfg.use_paraphrases)
    importance_s = time.perf_counter() - start
    weights = {name: p.detach().cpu() for name, p in model.named_parameters() if name in set(names)}
    changed, selected = dampen(weights, i_forget, i_data, cfg.alpha, cfg.dampening)
    n_selected = sum(int(mask.sum()) for mask in selected.values())
    n_total = sum(mask.numel() for mask in selected.values())
    return EditResult(method="ssd", changed=changed, targets=[f.case_id for f in targets],
                      layers=sorted({i for n in changed if (i := _layer_index(n)) is not None}),
                      timings={"importance": importance_s, "total": time.perf_counter() - start},
                      metrics={"n_selected": n_selected, "selected_share": n_selected / max(n_total, 1),
                               "n_changed_tensors": len(changed), "n_data_facts": len(data_facts),
                               "batch_size": batch_size},
                      config=asdict(cfg))


SSD_KNOB = Knob("alpha", 1.0, 20.0, stronger="lower",
                doc="α, the selection threshold I_F > α·I_D (lower: more parameters dampened; λ fixed)")


@EDITS.register("ssd", SSDConfig, spec=Spec(layers="any", knob=SSD_KNOB))
def ssd_method(handle: Any, request: EditRequest, cfg: SSDConfig) -> EditResult:
    """Selective Synaptic Dampening: shrink the weights the targets need far more than the data does."""
    return ssd_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
