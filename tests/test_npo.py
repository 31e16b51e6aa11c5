"""NPO and SimNPO: the losses against hand-computed values, the per-row NLL against a direct sum, and the
property that makes NPO what it is (at π = π_ref its gradient is gradient ascent's)."""

from __future__ import annotations

import math

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.npo import answer_nll_per_row, npo_loss, simnpo_loss


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_npo_loss_equals_the_hand_computed_value():
    nll, ref = torch.tensor([2.0, 5.0]), torch.tensor([1.0, 1.5])
    beta = 0.1
    # log π/π_ref = ref − nll = (−1, −3.5); −β·that = (0.1, 0.35)
    expected = -(2 / beta) * (_log_sigmoid(0.1) + _log_sigmoid(0.35)) / 2
    assert float(npo_loss(nll, ref, beta)) == pytest.approx(expected, rel=1e-6)


def test_simnpo_loss_equals_the_hand_computed_value():
    nll, n = torch.tensor([3.0, 8.0]), torch.tensor([1, 4])
    beta, delta = 4.5, 0.5
    # mean NLL per token = (3, 2); β(· − δ) = (11.25, 6.75)
    expected = -(2 / beta) * (_log_sigmoid(11.25) + _log_sigmoid(6.75)) / 2
    assert float(simnpo_loss(nll, n, beta, delta)) == pytest.approx(expected, rel=1e-6)


def test_npo_gradient_at_the_reference_is_gradient_ascent():
    nll = torch.tensor([1.3, 0.4, 2.2], requires_grad=True)
    npo_loss(nll, nll.detach().clone(), beta=0.1).backward()
    # d/d nll of −(2/β) log σ(β(nll − ref)) at nll = ref is −2σ(0) = −1, averaged: −mean(nll)'s gradient
    assert torch.allclose(nll.grad, torch.full((3,), -1 / 3))


def test_per_row_answer_nll_is_the_sum_over_answer_tokens():
    from edit.baselines import answer_batch
    from obliviate.metrics import continuation_ids, encode

    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    prompts, answers = [f.text for f in facts], ["Paris city", "London", "Rome of the"]
    batch = answer_batch(handle, prompts, answers)
    with torch.no_grad():
        nll, n = answer_nll_per_row(handle.hf, batch)
        for i, (prompt, answer) in enumerate(zip(prompts, answers)):
            p, a = encode(handle, prompt), continuation_ids(handle, answer)
            logprobs = handle.hf(input_ids=torch.tensor([p + a])).logits[0].log_softmax(-1)
            direct = -sum(float(logprobs[len(p) - 1 + j, t]) for j, t in enumerate(a))
            assert float(nll[i]) == pytest.approx(direct, rel=1e-4, abs=1e-5)
            assert int(n[i]) == len(a)


@pytest.mark.parametrize("method", ["npo", "simnpo"])
def test_npo_methods_lower_the_forget_answers_likelihood(method):
    import copy

    from edit.baselines import answer_batch
    from edit.npo import NPOConfig, SimNPOConfig, npo_edit, simnpo_edit

    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    forget, retain = facts[:2], facts[2:]
    run, cfg = (npo_edit, NPOConfig) if method == "npo" else (simnpo_edit, SimNPOConfig)
    result = run(handle, forget, retain, cfg(steps=5, lr=1e-2, stop_when_forgotten=False))
    batch = answer_batch(handle, [f.text for f in forget], [f.target_true for f in forget])
    with torch.no_grad():
        before, _ = answer_nll_per_row(handle.hf, batch)
        edited = copy.deepcopy(handle.hf)
        edited.load_state_dict(result.changed, strict=False)
        after, _ = answer_nll_per_row(edited, batch)
    assert float(after.sum()) > float(before.sum())
    assert result.metrics["steps"] == 5 and len(result.metrics["history"]) == 5
