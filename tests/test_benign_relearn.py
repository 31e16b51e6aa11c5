"""Benign relearning: never fine-tunes on a text about a target, trains a copy (the audited model's weights are
bit-for-bit unchanged afterwards, its hooks still act in the copy), and scores p_true after the fine-tuning."""

from __future__ import annotations

import pytest
import torch

import audit.benign_relearn as benign
from _locate_tiny import tiny_handle
from audit.attack_result import AttackContext, clone_tl, with_tl
from audit.benign_relearn import BenignRelearnConfig, benign_texts, check_unrelated, run_benign_relearn
from audit.relearn import TargetLeakError
from obliviate.facts import Fact
from obliviate.hooks import LogitPenalty, attach_permanently


def _facts() -> list[Fact]:
    city = "{} is in the city of"
    return [Fact(0, city, "Eiffel Tower", "Paris", "Rome", relation_id="city", split="forget"),
            Fact(1, "The {} is a famous", "Eiffel Tower", "Tower", "Ben", relation_id="kind", split="forget"),
            Fact(2, city, "Big Ben", "London", "Paris", relation_id="city", split="retain"),
            Fact(3, city, "Colosseum", "Rome", "London", relation_id="city", split="retain"),
            Fact(4, "The {} is a famous", "Big Ben", "Tower", "city", relation_id="kind", split="retain")]


def test_never_trains_on_a_text_about_a_target(monkeypatch):
    handle = tiny_handle("gpt2")
    facts = _facts()
    targets = facts[:1]
    # the pool holds the target and another fact of its subject: both are left out
    texts = benign_texts(handle, targets, AttackContext(pool_facts=facts), BenignRelearnConfig())
    assert texts and not any("Eiffel" in t for t in texts)
    assert set(texts) == {"Big Ben is in the city of London.", "Colosseum is in the city of Rome.",
                          "The Big Ben is a famous Tower."}
    with pytest.raises(TargetLeakError, match="about target 0"):
        check_unrelated([*texts, "The Eiffel Tower is a famous Tower."], targets)
    seen = []
    fine_tune = benign.fine_tuned_copy
    monkeypatch.setattr(benign, "fine_tuned_copy",
                        lambda h, examples, c: seen.extend(examples) or fine_tune(h, examples, c))
    run_benign_relearn(handle, handle, targets, texts, config=BenignRelearnConfig(steps=2))
    eiffel = set(handle.tokenizer("Eiffel", add_special_tokens=False)["input_ids"])
    assert seen and not any(eiffel & set(prompt + rest) for prompt, rest in seen)
    with pytest.raises(TargetLeakError):
        run_benign_relearn(handle, handle, targets, ["Eiffel Tower is in the city of Paris."])


def test_the_audited_model_is_untouched_and_its_hooks_stay_in_the_copy():
    handle = tiny_handle("gpt2")
    facts = _facts()
    tl = clone_tl(handle.tl)
    attach_permanently(tl, [LogitPenalty((handle.answer_token("Paris"),), 40.0)])
    edited = with_tl(handle, tl)
    before = {k: v.clone() for k, v in tl.state_dict().items()}
    texts = benign_texts(handle, facts[:1], AttackContext(pool_facts=facts), BenignRelearnConfig())
    result = run_benign_relearn(handle, edited, facts[:1], texts, oracle=handle,
                                config=BenignRelearnConfig(steps=8, lr=1e-2, batch_size=3))
    assert all(torch.equal(before[k], v) for k, v in tl.state_dict().items())
    assert result.metrics["loss_last"] < result.metrics["loss_first"]  # the copy did learn the texts
    assert result.recovered[0] < 1e-6  # the penalty still acts in the fine-tuned copy's forward pass
    assert result.oracle is not None and result.oracle.recovered[0] > result.recovered[0]
