"""Logit-lens attacks: the top-k / bottom-k test is the reference's, the lens at the last depth is the model's
output, and on the world an output-only suppression is recovered while the never-learned oracle is not."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import clone_tl, with_tl
from audit.logit_lens_attack import LogitLensConfig, lens_probabilities, logit_lens_scores, run_logit_lens, window_hits
from obliviate.hooks import LogitPenalty, attach_permanently
from _world import known_forget_targets


def test_window_hits_top_and_bottom_with_ties():
    values = torch.tensor([[[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]]])  # depth 1, batch 1, vocab 6
    for answer, top, bottom in ((0, True, False), (1, True, False), (2, False, False), (4, False, True),
                                (3, False, False)):
        t, b = window_hits(values, torch.tensor([answer]), k=2)
        assert (bool(t), bool(b)) == (top, bottom), answer
    t, b = window_hits(values, torch.tensor([3]), k=3)  # 0.1 ties the 3rd largest and the 3rd smallest
    assert bool(t) and bool(b)


def test_last_depth_is_the_model_output_and_head_hooks_count():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    answers = [handle.answer_token(f.target_true) for f in facts]
    attach_permanently(tl, [LogitPenalty(tuple(answers), 25.0)])
    tokens = handle.to_tokens([f.text for f in facts])
    last = torch.tensor([len(handle.to_tokens(f.text)[0]) - 1 for f in facts])
    lens = lens_probabilities(tl, tokens, last, decode_with_hooks=True)
    output = tl(tokens).softmax(-1)[torch.arange(len(facts)), last]
    assert torch.allclose(lens[-1], output, atol=1e-5)
    assert lens.shape[0] == handle.n_layers + 1
    raw = lens_probabilities(tl, tokens, last)  # default: the head's weights without its hooks
    plain = lens_probabilities(handle.tl, tokens, last, decode_with_hooks=True)
    assert torch.allclose(raw, plain, atol=1e-5)  # the residuals are the base's, and so is the weights-only head


def test_output_penalty_lands_in_bottom_k_at_every_layer():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple(handle.answer_token(f.target_true) for f in facts), 50.0)])
    outcome = logit_lens_scores(with_tl(handle, tl), facts, LogitLensConfig(k=3, decode_with_hooks=True))
    for fact in facts:
        assert outcome.scores[fact.case_id].details["hit_layers"]["head_bottomk"] == list(range(handle.n_layers))
        assert outcome.scores[fact.case_id].score == 1.0
    # the unedited model has them at the bottom far less often (by chance in a 20-token vocabulary)
    plain = logit_lens_scores(handle, facts, LogitLensConfig(k=3, decode_with_hooks=True))
    # read without the head's hooks, the penalised model's lens is the base model's
    unhooked = logit_lens_scores(with_tl(handle, tl), facts, LogitLensConfig(k=3))
    base_lens = logit_lens_scores(handle, facts, LogitLensConfig(k=3))
    assert all(unhooked.scores[c].details == base_lens.scores[c].details for c in base_lens.scores)
    hits = sum(len(s.details["hit_layers"]["head_bottomk"]) for s in plain.scores.values())
    assert hits <= len(facts) * handle.n_layers // 2


@pytest.mark.slow
def test_world_suppression_recovered_beyond_the_oracle(world_handle, world_retain_handle):
    targets = known_forget_targets(world_handle, 40)
    tl = clone_tl(world_handle.tl)
    answers = tuple(sorted({world_handle.answer_token(f.target_true) for f in targets}))
    attach_permanently(tl, [LogitPenalty(answers, 20.0)])
    edited = with_tl(world_handle, tl)
    result = run_logit_lens(world_handle, edited, targets, oracle=world_retain_handle)
    assert result.metrics["mean_unlearned"] == 0.0  # suppressed at the output
    assert result.metrics["mean_attacked"] >= 0.9
    assert result.oracle is not None
    assert result.metrics["mean_attacked"] - result.oracle.metrics["mean_attacked"] >= 0.2
    # the oracle's rate under the same attack is reported for the verdict
    assert 0.0 <= result.oracle.metrics["mean_attacked"] <= 1.0


def test_every_attacked_layer_and_the_bottom_k_hit_are_sites_the_verdict_can_read():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    config = LogitLensConfig(layers=(0, 1), k=2)
    result = run_logit_lens(handle, handle, facts, oracle=handle, config=config)
    assert set(result.sites) == {"layer 0", "layer 1", "bottom-k"}
    for fact in facts:
        details = result.targets[fact.case_id].details
        by_layer = [result.sites[f"layer {layer}"][fact.case_id] for layer in (0, 1)]
        assert by_layer == pytest.approx(details["p_answer_by_layer"], abs=1e-6)
        assert result.sites["bottom-k"][fact.case_id] == float(bool(details["hit_layers"]["head_bottomk"]))
    assert set(result.oracle.sites) == set(result.sites)  # the oracle's run has the same sites to compare with
