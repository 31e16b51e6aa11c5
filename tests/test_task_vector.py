"""Task-vector negation: the edited weights are θ − λ·(θ_ft − θ) bit for bit, the negation moves the forget
answers the other way from the fine-tuning, and a λ or steps that cannot be used is refused naming its key."""

from __future__ import annotations

import copy

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.task_vector import TaskVectorConfig, fine_tune, task_vector_edit
from obliviate.config import ConfigError
from obliviate.registry import EDITS


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


def _forget_nll(hf, handle, facts) -> float:
    from edit.baselines import _answer_nll, answer_batch

    with torch.no_grad():
        nll, _ = _answer_nll(hf, answer_batch(handle, [f.text for f in facts], [f.target_true for f in facts]))
    return float(nll)


def test_edited_weights_are_theta_minus_lambda_tau_exactly(handle):
    facts = tiny_facts()
    base = {n: p.detach().clone() for n, p in handle.hf.named_parameters()}
    cfg = TaskVectorConfig(steps=3, lr=1e-2, batch_size=4, scaling_coef=2.5)
    result = task_vector_edit(handle, facts[:2], facts[2:], cfg)
    tuned = fine_tune(handle, facts[:2], facts[2:], cfg).changed  # the same seeded fine-tuning, run again
    assert tuned and set(result.changed) == set(tuned)
    for name, theta_ft in tuned.items():
        tau = theta_ft - base[name]
        assert torch.equal(result.changed[name], base[name] - 2.5 * tau), name
        assert tau.abs().max() > 0
    # the handle was not written
    assert all(torch.equal(p, base[n]) for n, p in handle.hf.named_parameters())


def test_the_negation_moves_the_forget_answers_the_other_way(handle):
    facts = tiny_facts()
    forget = facts[:2]
    cfg = TaskVectorConfig(steps=5, lr=1e-3, batch_size=4, scaling_coef=1.0)
    before = _forget_nll(handle.hf, handle, forget)
    tuned_model, edited_model = copy.deepcopy(handle.hf), copy.deepcopy(handle.hf)
    tuned_model.load_state_dict(fine_tune(handle, forget, (), cfg).changed, strict=False)
    edited_model.load_state_dict(task_vector_edit(handle, forget, (), cfg).changed, strict=False)
    assert _forget_nll(tuned_model, handle, forget) < before < _forget_nll(edited_model, handle, forget)


@pytest.mark.parametrize(("key", "value"), [("scaling_coef", float("nan")), ("scaling_coef", float("inf")),
                                            ("scaling_coef", -1.0), ("steps", -1), ("lr", 0.0)])
def test_a_value_that_cannot_be_used_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"'params\.{key}'"):
        EDITS.get("task_vector").params({key: value})
