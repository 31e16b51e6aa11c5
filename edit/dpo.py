"""DPO and IdkDPO: preference-based suppression of the forget answers (the field's "not true unlearning" example).

DPO (Rafailov et al. 2023, "Direct Preference Optimization") used for unlearning as in TOFU (Maini et al. 2024;
reference locuslab/tofu ``dataloader.py``, loss type ``dpo``) and licong-lin/negative-preference-optimization
(``TOFU/dataloader.py``, ``dpo`` / ``dpo_grad_diff``): the forget answer is the REJECTED response, another
answer the CHOSEN one, against the frozen model before unlearning (π_ref = the base):

    L_DPO = −(2/β) · mean_i log σ(β · [(log π_θ(c_i|x_i) − log π_θ(r_i|x_i))
                                      − (log π_ref(c_i|x_i) − log π_ref(r_i|x_i))]),

log π the SUM of the answer's token log-probabilities. The factor 2/β is the NPO repository's and
open-unlearning's (``compute_dpo_loss``); TOFU's ``dpo`` omits it (a rescaled learning rate). Plus α · NLL(retain)
as in ``dpo_grad_diff`` and open-unlearning's DPO trainer (β = 0.1, γ = α = 1, ``configs/trainer/DPO.yaml``).

- ``dpo``: chosen = the fact's counterfactual answer (`Fact.target_new`), an "other answer".
- ``idkdpo``: chosen = an "I don't know"-style refusal (TOFU's ``idontknow.jsonl`` idea; a short list here,
  assigned to prompts in turn). Each refusal must tokenise without the unknown token.

The model learns to PREFER the other answer, not to lose the fact: the true answer's probability falls relative to
the chosen one, and what the preference hides should still be readable (logit lens, probes, relearning) — the
audit is expected to call this suppression.

Strength knob: `steps` (log scale, integer), with lr and β fixed. With the 2/β factor a pair's gradient is
2σ(−β·margin)·∇margin: β only sets where the push saturates (small β ≈ unbounded ascent on the margin, large
β stops early), so forgetting is not monotone in β in any useful way, whereas more steps at a fixed rate move the
margin further (and `stop_when_forgotten` ends the run once nothing more is to be gained). Steps are also TOFU's own
axis: it reads forget quality along the unlearning trajectory, epoch by epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float

from edit.baselines import GradDiffConfig, _Batch, _fact_prompts, answer_batch, finetune_unlearn
from edit.npo import answer_nll_per_row
from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import EDITS, Knob, Spec

STEPS_KNOB = Knob("steps", 2, 256, scale="log", integer=True,
                  doc="optimiser steps at a fixed learning rate and β (stops early once nothing is recalled)")

IDK_ANSWERS = ("I don't know", "I do not know", "nobody knows", "that is not known", "I am not sure")


@dataclass
class DPOConfig(GradDiffConfig):
    """DPO against the frozen base (open-unlearning defaults: β = 0.1, forget weight γ = 1, retain weight α = 1)."""

    beta: float = 0.1
    """β: inverse temperature of the preference loss (TOFU, NPO repository, open-unlearning: 0.1)."""

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        check_range("beta", self.beta, minimum=1e-12, fix="β must be positive")
        check_range("steps", self.steps, minimum=1, fix="use at least one optimiser step")


@dataclass
class IdkDPOConfig(DPOConfig):
    """IdkDPO: DPO whose chosen answer is a refusal."""

    idk_answers: tuple[str, ...] = IDK_ANSWERS
    """Refusals used as chosen answers, assigned to the forget prompts in turn (TOFU samples them at random)."""

    def validate(self) -> None:
        super().validate()
        if not self.idk_answers or not all(isinstance(a, str) and a.strip() for a in self.idk_answers):
            from obliviate.config.loader import InvalidField

            raise InvalidField("idk_answers", "give at least one non-empty refusal, e.g. [\"I don't know\"].")


def dpo_loss(chosen_nll: Float[torch.Tensor, " batch"], rejected_nll: Float[torch.Tensor, " batch"],
             ref_chosen_nll: Float[torch.Tensor, " batch"], ref_rejected_nll: Float[torch.Tensor, " batch"],
             beta: float) -> torch.Tensor:
    """−(2/β) mean log σ(β [(log π_c − log π_r) − (log π_ref,c − log π_ref,r)]), log π = −(summed
    answer NLL).
    """
    policy = rejected_nll - chosen_nll
    reference = ref_rejected_nll - ref_chosen_nll
    return -(2.0 / beta) * F.logsigmoid(beta * (policy - reference)).mean()


def _check_in_vocabulary(handle: Any, answers: Sequence[str], field: str) -> None:
    unk = getattr(handle.tokenizer, "unk_token_id", None)
    for answer in answers:
        ids = continuation_ids(handle, answer)
        if not ids or (unk is not None and unk in ids):
            from obliviate.config.loader import InvalidField

            raise InvalidField(field, f"{answer!r} tokenises to nothing or to the unknown token under "
                                      f"{handle.name}'s tokenizer; use words its vocabulary spells.")


def chosen_answers(handle: Any, targets: Sequence[Fact], cfg: DPOConfig) -> dict[tuple[int, ...], tuple[str, str]]:
    """(prompt, chosen answer) of every forget training prompt, keyed by the prompt's token ids."""
    prompts, _ = _fact_prompts(targets, cfg.use_paraphrases)
    owners = [f for f in targets for _ in ([f.text, *f.paraphrase_prompts] if cfg.use_paraphrases else [f.text])]
    if isinstance(cfg, IdkDPOConfig):
        _check_in_vocabulary(handle, cfg.idk_answers, "idk_answers")
        chosen = [cfg.idk_answers[i % len(cfg.idk_answers)] for i in range(len(prompts))]
    else:
        chosen = [f.target_new for f in owners]
        if any(not c or c == f.target_true for c, f in zip(chosen, owners)):
            raise ValueError("dpo takes each fact's target_new as the chosen answer; a target has none (or it "
                             "equals target_true). Use idkdpo, whose chosen answer is a refusal.")
    return {tuple(encode(handle, p)): (p, c) for p, c in zip(prompts, chosen)}


def _chosen_batch(handle: Any, batch: _Batch, chosen: dict[tuple[int, ...], tuple[str, str]]) -> _Batch:
    """The same prompts as `batch` (rows of prompt + true answer), answered by their chosen answers."""
    rows = [chosen[tuple(batch.input_ids[i, : int(batch.answer_first[i]) + 1].tolist())]
            for i in range(len(batch.input_ids))]
    return answer_batch(handle, [p for p, _ in rows], [c for _, c in rows])


def dpo_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: DPOConfig | None = None, *,
             layers: Sequence[int] | None = None, method: str = "dpo") -> EditResult:
    """DPO (or IdkDPO, by the config's type) on a copy of `handle.hf`; π_ref = `handle.hf`, read only."""
    cfg = cfg or DPOConfig()
    chosen = chosen_answers(handle, targets, cfg)

    def forget(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        good = _chosen_batch(handle, batch, chosen)
        rejected_nll, n = answer_nll_per_row(model, batch)
        chosen_nll, _ = answer_nll_per_row(model, good)
        with torch.no_grad():
            ref_rejected, _ = answer_nll_per_row(handle.hf, batch)
            ref_chosen, _ = answer_nll_per_row(handle.hf, good)
        return dpo_loss(chosen_nll, rejected_nll, ref_chosen, ref_rejected, cfg.beta), rejected_nll.sum() / n.sum()

    return finetune_unlearn(handle, targets, retain, cfg, forget, method=method, layers=layers)


@EDITS.register("dpo", DPOConfig, spec=Spec(layers="any", knob=STEPS_KNOB))
def dpo_method(handle: Any, request: EditRequest, cfg: DPOConfig) -> EditResult:
    """DPO: prefer each target's counterfactual answer over its true one (against the frozen base), plus retain NLL."""
    return dpo_edit(handle, request.targets, request.retain, cfg, layers=request.layers)


@EDITS.register("idkdpo", IdkDPOConfig, spec=Spec(layers="any", knob=STEPS_KNOB))
def idkdpo_method(handle: Any, request: EditRequest, cfg: IdkDPOConfig) -> EditResult:
    """IdkDPO: prefer a refusal over each target's true answer (against the frozen base), plus retain NLL."""
    return dpo_edit(handle, request.targets, request.retain, cfg, layers=request.layers, method="idkdpo")
