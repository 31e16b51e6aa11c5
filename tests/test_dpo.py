"""DPO and IdkDPO: the loss against the DPO formula on hand-computed log-probs, the chosen answers each variant
uses, and the direction of the edit (the true answer falls relative to the chosen one)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.baselines import answer_batch
from edit.dpo import DPOConfig, IdkDPOConfig, chosen_answers, dpo_edit, dpo_loss
from edit.npo import answer_nll_per_row
from obliviate.config import ConfigError
from obliviate.metrics import encode


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_loss_equals_the_formula_on_hand_computed_log_probs():
    # log-probs of the chosen / rejected answers under the policy and the reference (two pairs)
    pi_c, pi_r = [-2.0, -4.0], [-1.0, -0.5]
    ref_c, ref_r = [-3.0, -4.5], [-0.5, -0.25]
    beta = 0.1
    # margins: (−2 + 1) − (−3 + 0.5) = 1.5 ; (−4 + 0.5) − (−4.5 + 0.25) = 0.75
    expected = -(2 / beta) * (_log_sigmoid(0.15) + _log_sigmoid(0.075)) / 2
    nll = lambda xs: torch.tensor([-x for x in xs])  # noqa: E731 - the loss takes NLLs (−log π)
    got = dpo_loss(nll(pi_c), nll(pi_r), nll(ref_c), nll(ref_r), beta)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_dpo_at_the_reference_pushes_chosen_up_and_rejected_down_equally():
    chosen = torch.tensor([1.0, 2.0], requires_grad=True)
    rejected = torch.tensor([0.5, 0.7], requires_grad=True)
    dpo_loss(chosen, rejected, chosen.detach().clone(), rejected.detach().clone(), beta=0.1).backward()
    # at π = π_ref the margin is 0: d/d nll_c = +2σ(0)/n = +0.5, d/d nll_r = −0.5 (descent lowers nll_c)
    assert torch.allclose(chosen.grad, torch.full((2,), 0.5)) and torch.allclose(rejected.grad, torch.full((2,), -0.5))


def test_dpo_chooses_the_counterfactual_and_idkdpo_a_refusal():
    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    other = chosen_answers(handle, facts, DPOConfig())
    assert [other[tuple(encode(handle, f.text))][1] for f in facts] == [f.target_new for f in facts]
    refusals = chosen_answers(handle, facts, IdkDPOConfig(idk_answers=("unknown",)))
    assert {answer for _, answer in refusals.values()} == {"unknown"}
    with pytest.raises(ConfigError, match="'idk_answers'.*unknown token"):
        chosen_answers(handle, facts, IdkDPOConfig(idk_answers=("I don't know",)))  # not in the tiny vocabulary
    with pytest.raises(ConfigError, match="'idk_answers'"):
        IdkDPOConfig(idk_answers=()).validate()


@pytest.mark.parametrize("variant", ["dpo", "idkdpo"])
def test_dpo_lowers_the_true_answer_relative_to_the_chosen_one(variant):
    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    forget, retain = facts[:2], facts[2:]
    cfg = DPOConfig(steps=5, lr=1e-2, stop_when_forgotten=False) if variant == "dpo" else \
        IdkDPOConfig(steps=5, lr=1e-2, stop_when_forgotten=False, idk_answers=("unknown",))
    result = dpo_edit(handle, forget, retain, cfg, method=variant)
    prompts = [f.text for f in forget]
    chosen = [f.target_new for f in forget] if variant == "dpo" else ["unknown"] * len(forget)
    true_batch = answer_batch(handle, prompts, [f.target_true for f in forget])
    chosen_batch = answer_batch(handle, prompts, chosen)
    edited = copy.deepcopy(handle.hf)
    edited.load_state_dict(result.changed, strict=False)
    with torch.no_grad():
        gap_before = answer_nll_per_row(handle.hf, true_batch)[0] - answer_nll_per_row(handle.hf, chosen_batch)[0]
        gap_after = answer_nll_per_row(edited, true_batch)[0] - answer_nll_per_row(edited, chosen_batch)[0]
    assert bool((gap_after > gap_before).all())  # log π(chosen) − log π(true) grew for every target
    assert result.metrics["steps"] == 5 and result.method == variant
