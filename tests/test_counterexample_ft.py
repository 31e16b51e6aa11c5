"""Counter-example fine-tuning: it trains the forget prompts towards their target_new (not their true answers),
honours both goals, keeps the handle, and refuses negative steps naming the key."""

from __future__ import annotations

import copy

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.baselines import _answer_nll, answer_batch
from edit.result import EditRequest, run_method
from obliviate.config import ConfigError
from obliviate.registry import EDITS


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


def _nll(hf, handle, facts, which: str) -> float:
    with torch.no_grad():
        nll, _ = _answer_nll(hf, answer_batch(handle, [f.text for f in facts], [getattr(f, which) for f in facts]))
    return float(nll)


@pytest.mark.parametrize("goal", ["erase", "rewrite"])
def test_it_trains_the_forget_prompts_towards_their_counterfactual_answers(handle, goal):
    facts = tiny_facts()
    forget = facts[:2]
    base = {n: p.detach().clone() for n, p in handle.hf.named_parameters()}
    cfg = EDITS.get("counterexample_ft").params({"steps": 8, "lr": 1e-2, "batch_size": 4})
    result = run_method("counterexample_ft", handle, EditRequest(targets=forget, retain=facts[2:], goal=goal), cfg)
    edited = copy.deepcopy(handle.hf)
    edited.load_state_dict(result.changed, strict=False)
    new_before, new_after = _nll(handle.hf, handle, forget, "target_new"), _nll(edited, handle, forget, "target_new")
    true_before, true_after = (_nll(handle.hf, handle, forget, "target_true"),
                               _nll(edited, handle, forget, "target_true"))
    assert new_after < 0.5 * new_before
    assert true_after > true_before  # the counterfactual displaced the true answer
    assert all(torch.equal(p, base[n]) for n, p in handle.hf.named_parameters())


@pytest.mark.parametrize(("key", "value"), [("steps", -1), ("lr", float("nan")), ("alpha", -0.5)])
def test_a_value_that_cannot_be_used_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"'params\.{key}'"):
        EDITS.get("counterexample_ft").params({key: value})
