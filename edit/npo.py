"""NPO and SimNPO: preference-style forget terms in the GradDiff loop (`edit.baselines.finetune_unlearn`).

- NPO (Zhang, Lin, Bai & Mei 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective
  Unlearning"; reference open-unlearning ``src/trainer/unlearn/npo.py`` with ``compute_dpo_loss`` in
  ``src/trainer/utils.py``): DPO with the forget answer as the only, rejected, response,
      L_NPO = −(2/β) · mean_i log σ(−β · (log π_θ(y_i|x_i) − log π_ref(y_i|x_i))),
  log π the SUM of the answer tokens' log-probabilities, π_ref the frozen model before unlearning. As β → 0 its
  gradient is gradient ascent's; the sigmoid weight fades it as the answer becomes unlikely (no runaway ascent).
- SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei & Liu 2024, "Simplicity Prevails: Rethinking Negative Preference
  Optimization for LLM Unlearning"; reference open-unlearning ``src/trainer/unlearn/simnpo.py``; paper code
  OPTML-Group/Unlearn-Simple): no reference model, length-normalised,
      L_SimNPO = −(2/β) · mean_i log σ(β · (NLL_θ(y_i|x_i) / |y_i| − δ)),
  the paper's margin γ being open-unlearning's δ (0 by default).

Both are added to α · NLL(retain) with the forget weight γ of GradDiff, as open-unlearning's trainers do. Defaults
are open-unlearning's trainer configs (``configs/trainer/NPO.yaml``: β = 0.1, γ = α = 1; ``SimNPO.yaml``: β = 4.5,
γ = 0.125, α = 1, δ = 0); lr, steps and batch are GradDiff's here (tiny models, few facts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float

from edit.baselines import LR_KNOB, GradDiffConfig, _Batch, finetune_unlearn
from edit.result import EditRequest, EditResult
from obliviate.registry import EDITS, Spec


@dataclass
class NPOConfig(GradDiffConfig):
    """NPO (open-unlearning defaults: β = 0.1, forget weight γ = 1, retain weight α = 1)."""

    beta: float = 0.1
    """β: inverse temperature of the preference loss (open-unlearning: 0.1)."""

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        super().validate()
        check_range("beta", self.beta, minimum=1e-12, fix="β must be positive")


@dataclass
class SimNPOConfig(GradDiffConfig):
    """SimNPO (open-unlearning defaults: β = 4.5, forget weight γ = 0.125, retain weight α = 1, δ = 0)."""

    gamma: float = 0.125
    """Weight of the forget term (open-unlearning's SimNPO: 0.125)."""
    beta: float = 4.5
    """β: inverse temperature (open-unlearning: 4.5)."""
    delta: float = 0.0
    """δ: the reward margin subtracted from the mean answer NLL (the paper's γ; open-unlearning: 0)."""

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        super().validate()
        check_range("beta", self.beta, minimum=1e-12, fix="β must be positive")


def answer_nll_per_row(hf: Any, batch: _Batch) -> tuple[Float[torch.Tensor, " batch"], torch.Tensor]:
    """(summed NLL of each row's answer tokens, number of answer tokens per row)."""
    device = next(hf.parameters()).device
    logits = hf(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    labels = batch.labels[:, 1:].to(device)
    token_nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels, ignore_index=-100,
                                reduction="none")
    return token_nll.sum(-1), (labels != -100).sum(-1)


def npo_loss(nll: Float[torch.Tensor, " batch"], ref_nll: Float[torch.Tensor, " batch"], beta: float
             ) -> torch.Tensor:
    """−(2/β) mean log σ(−β log(π/π_ref)), with log(π/π_ref) = ref_nll − nll (summed answer NLLs)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (ref_nll - nll)).mean()


def simnpo_loss(nll: Float[torch.Tensor, " batch"], n_tokens: torch.Tensor, beta: float, delta: float = 0.0
                ) -> torch.Tensor:
    """−(2/β) mean log σ(β (nll / |y| − δ)) (summed answer NLL over its length)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll / n_tokens.clamp(min=1) - delta)).mean()


def npo_edit(handle: Any, targets, retain, cfg: NPOConfig | None = None, *, layers=None) -> EditResult:
    """NPO on a copy of `handle.hf` (π_ref = `handle.hf`, read only); the handle is not modified."""
    cfg = cfg or NPOConfig()

    def forget(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        nll, n = answer_nll_per_row(model, batch)
        with torch.no_grad():
            ref_nll, _ = answer_nll_per_row(handle.hf, batch)
        return npo_loss(nll, ref_nll, cfg.beta), nll.sum() / n.sum()

    return finetune_unlearn(handle, targets, retain, cfg, forget, method="npo", layers=layers)


def simnpo_edit(handle: Any, targets, retain, cfg: SimNPOConfig | None = None, *, layers=None) -> EditResult:
    """SimNPO on a copy of `handle.hf`; the handle is not modified."""
    cfg = cfg or SimNPOConfig()

    def forget(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        nll, n = answer_nll_per_row(model, batch)
        return simnpo_loss(nll, n, cfg.beta, cfg.delta), nll.sum() / n.sum()

    return finetune_unlearn(handle, targets, retain, cfg, forget, method="simnpo", layers=layers)


@EDITS.register("npo", NPOConfig, spec=Spec(layers="any", knob=LR_KNOB))
def npo_method(handle: Any, request: EditRequest, cfg: NPOConfig) -> EditResult:
    """NPO: a preference loss against the frozen model on the targets' answers, plus the retain NLL."""
    return npo_edit(handle, request.targets, request.retain, cfg, layers=request.layers)


@EDITS.register("simnpo", SimNPOConfig, spec=Spec(layers="any", knob=LR_KNOB))
def simnpo_method(handle: Any, request: EditRequest, cfg: SimNPOConfig) -> EditResult:
    """SimNPO: NPO without the reference model, length-normalised, plus the retain NLL."""
    return simnpo_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
