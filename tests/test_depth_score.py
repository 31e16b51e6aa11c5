"""Unlearning depth score: the reference's aggregation, and its convention on the world — the retain model
against itself scores 1 (as deep as never learning), the untouched model and an output-only suppression 0."""

from __future__ import annotations

import pytest

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import clone_tl, with_tl
from audit.depth_score import UDSConfig, depth_scores, run_uds, uds_from_deltas
from obliviate.hooks import AddVector, LogitPenalty, attach_permanently
from _world import known_forget_targets


def test_uds_aggregation():
    # layers 0 and 2 encode (Δ1 > 0.05); layer 1 does not and is ignored
    assert uds_from_deltas([1.0, 0.01, 3.0], [0.5, 9.0, 3.0]) == pytest.approx((1.0 * 0.5 + 3.0 * 1.0) / 4.0)
    assert uds_from_deltas([1.0, 2.0], [-1.0, 5.0]) == pytest.approx(2.0 / 3.0)  # ratios clipped to [0, 1]
    assert uds_from_deltas([0.01, 0.02], [1.0, 1.0]) is None
    assert uds_from_deltas([1.0], [1.0], threshold=1.0) is None


def test_patching_identical_models_changes_nothing_and_hooks_inside_count():
    base = tiny_handle("gpt2")
    facts = tiny_facts()
    other = tiny_handle("llama")
    other = with_tl(base, other.tl)  # a "retain" model with different states, same tokenizer
    depths = depth_scores(base, other, base, facts)
    for d in depths.values():
        assert all(abs(v) < 1e-5 for v in d.delta_unlearned)  # the full model's own states
    # an output-only hook leaves every hidden state as it is
    tl = clone_tl(base.tl)
    attach_permanently(tl, [LogitPenalty(tuple(base.answer_token(f.target_true) for f in facts), 30.0)])
    assert all(all(abs(v) < 1e-5 for v in d.delta_unlearned)
               for d in depth_scores(base, other, with_tl(base, tl), facts).values())
    # a steering hook inside block 1 changes the states read from it
    tl = clone_tl(base.tl)
    attach_permanently(tl, [AddVector("blocks.1.hook_resid_post", base.tl.W_U[:, 5].detach(), 30.0)])
    moved = depth_scores(base, other, with_tl(base, tl), facts, UDSConfig(layers=(1,)))
    assert any(abs(d.delta_unlearned[0]) > 1e-3 for d in moved.values())


@pytest.mark.slow
def test_world_uds_convention(world_handle, world_retain_handle):
    targets = known_forget_targets(world_handle, 24)
    as_retain = run_uds(world_handle, world_retain_handle, targets, oracle=world_retain_handle)
    untouched = run_uds(world_handle, world_handle, targets, oracle=world_retain_handle)
    uds_retain = [t.details["uds"] for t in as_retain.targets.values() if t.details["uds"] is not None]
    uds_untouched = [t.details["uds"] for t in untouched.targets.values() if t.details["uds"] is not None]
    assert uds_retain  # some forgotten facts have knowledge-encoding layers
    assert all(u == pytest.approx(1.0) for u in uds_retain)
    assert all(u == pytest.approx(0.0, abs=1e-6) for u in uds_untouched)
    tl = clone_tl(world_handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple({world_handle.answer_token(f.target_true) for f in targets}), 20.0)])
    suppressed = run_uds(world_handle, with_tl(world_handle, tl), targets, oracle=world_retain_handle)
    assert suppressed.metrics["mean_uds"] == pytest.approx(0.0, abs=1e-6)  # shallow: states untouched
    assert suppressed.metrics["mean_attacked"] == pytest.approx(1.0, abs=1e-6)  # score = 1 − UDS
