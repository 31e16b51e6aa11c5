"""The relearning-speed check: a copy relearns the targets (the handle untouched), and its figures are split by
verdict."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import plain_scores
from audit.relearn_speed import RelearnSpeedConfig, relearn_speed, split_means


def test_relearning_the_targets_raises_them_on_a_copy_only():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    before = {k: v.clone() for k, v in handle.tl.state_dict().items()}
    plain = {c: t.score for c, t in plain_scores(handle, facts).items()}
    speeds = relearn_speed(handle, facts, RelearnSpeedConfig(steps=8, lr=1e-2, batch_size=3))
    assert all(torch.equal(before[k], v) for k, v in handle.tl.state_dict().items())
    assert sorted(speeds) == [0, 1, 2]
    assert sum(speeds.values()) > sum(plain.values()) + 0.1  # eight steps on the answers teach them


def test_split_means_follow_the_verdicts():
    speeds = {1: 0.2, 2: 0.4, 3: 0.9}
    assert split_means(speeds, {1: "erased", 2: "erased", 3: "suppressed"}) == {"erased": pytest.approx(0.3),
                                                                                 "suppressed": 0.9}
    assert split_means(speeds, {1: "erased", 3: "intact"}) == {"erased": 0.2, "suppressed": None}


def test_verdict_check_gives_every_model_its_means_by_verdict_and_the_counts():
    from audit.relearn_speed import verdict_check

    handle, other = tiny_handle("gpt2"), tiny_handle("gpt2")
    facts = tiny_facts()
    settings = RelearnSpeedConfig(steps=2, lr=1e-2, batch_size=3)
    oracle = relearn_speed(other, facts, settings)
    check = verdict_check(handle, {"oracle": oracle}, facts, {0: "erased", 1: "suppressed", 2: "intact"}, settings)
    assert set(check) == {"edited", "oracle"}
    assert check["edited"]["n:erased"] == check["edited"]["n:suppressed"] == 1.0
    assert check["oracle"]["erased"] == oracle[0] and check["oracle"]["suppressed"] == oracle[1]
    alone = relearn_speed(handle, facts, settings)
    assert check["edited"]["erased"] == pytest.approx(alone[0])  # seeded: the same copy relearns the same
    assert check["edited"]["suppressed"] == pytest.approx(alone[1])
