"""Held-out relearning: subjects dealt into folds, every target scored by a copy that never trained on its subject,
the copy keeps the edit's hooks, and on the world a weight-level suppression comes back beyond the oracle's."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import clone_tl, with_tl
from audit.heldout_relearn import HeldoutRelearnConfig, heldout_relearn_scores, run_heldout_relearn, subject_folds
from obliviate.facts import Fact
from obliviate.hooks import LogitPenalty, attach_permanently


def _facts_about(subjects: int, per_subject: int = 2) -> list[Fact]:
    return [Fact(case_id=s * per_subject + r, prompt="{} lives in" if r == 0 else "{} works in",
                 subject=f"Person {s}", target_true="Paris", target_new="Rome")
            for s in range(subjects) for r in range(per_subject)]


def test_folds_keep_each_subject_in_one_fold_and_cover_every_target():
    facts = _facts_about(7)
    folds = subject_folds(facts, 3, seed=0)
    assert len(folds) == 3 and all(folds)
    assert sorted(f.case_id for fold in folds for f in fold) == [f.case_id for f in facts]
    owners = {}
    for k, fold in enumerate(folds):
        for f in fold:
            assert owners.setdefault(f.subject, k) == k  # a subject never spans two folds
    assert subject_folds(facts, 3, seed=0) == folds  # seeded
    assert [[f.case_id for f in fold] for fold in subject_folds(facts, 3, seed=1)] != \
        [[f.case_id for f in fold] for fold in folds]


def test_too_few_subjects_is_an_error_naming_the_fix():
    facts = _facts_about(1, per_subject=3)
    with pytest.raises(ValueError, match="1 subject.*folds=2"):
        subject_folds(facts, 2, seed=0)
    with pytest.raises(ValueError, match="folds"):
        HeldoutRelearnConfig(folds=1)


def test_each_fold_is_scored_by_a_copy_never_trained_on_its_subjects(monkeypatch):
    import audit.heldout_relearn as module

    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    seen = []
    real = module.fine_tuned_copy

    def spy(h, examples, config):
        seen.append({tuple(prompt) for prompt, _ in examples})
        return real(h, examples, config)

    monkeypatch.setattr(module, "fine_tuned_copy", spy)
    config = HeldoutRelearnConfig(folds=3, steps=2, batch_size=2, include_paraphrases=False)
    scores, _ = heldout_relearn_scores(handle, facts, config)
    assert sorted(scores) == [0, 1, 2] and len(seen) == 3
    from obliviate.metrics import encode

    for fold, prompts in zip(subject_folds(facts, 3, config.seed), seen):
        assert all(tuple(encode(handle, f.text)) not in prompts for f in fold)  # its own targets never trained on
        assert len(prompts) == len(facts) - len(fold)


def test_the_copies_keep_the_hooks_and_leave_the_handle_untouched():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple(handle.answer_token(f.target_true) for f in facts), 40.0)])
    edited = with_tl(handle, tl)
    before = {k: v.clone() for k, v in tl.state_dict().items()}
    result = run_heldout_relearn(handle, edited, facts, config=HeldoutRelearnConfig(folds=3, steps=3, lr=1e-2,
                                                                                      batch_size=2))
    assert all(torch.equal(before[k], v) for k, v in tl.state_dict().items())
    assert max(result.recovered.values()) < 1e-6  # the penalty is still in every copy's forward pass
    assert result.attack == "heldout_relearn" and result.metrics["n_targets"] == 3.0


def test_no_copy_is_taught_an_answer_it_is_scored_on():
    from audit.heldout_relearn import training_facts

    facts = [Fact(case_id=i, prompt="{} lives in", subject=f"Person {i}", target_true=answer, target_new="Rome")
             for i, answer in enumerate(["Paris", "London", "paris ", "Oslo"])]
    scored = facts[:1]
    assert [f.case_id for f in training_facts(facts, scored)] == [1, 3]  # "paris " is Paris: dropped
    assert [f.case_id for f in training_facts(facts, scored, unseen_answers=False)] == [1, 2, 3]
    with pytest.raises(ValueError, match="unseen_answers"):
        training_facts(facts[:3:2], facts[:1])


@pytest.mark.slow
def test_on_the_world_it_brings_back_what_a_refusal_block_hides_and_not_what_was_never_taught(world_handle,
                                                                                           world_retain_handle):
    """The last block trained to answer one word hides 40 facts the earlier blocks still hold: retraining on half
    of them undoes the shared refusal and the other half come back; the never-taught oracle gets its prior."""
    from audit.calibrate import calibration_inputs, calibration_targets
    from audit.zoo import ZooInputs, build_last_block_refusal

    world, oracle, facts, retain = calibration_inputs(world_handle, world_retain_handle)
    targets = calibration_targets(world, oracle, facts, 40)
    refusing = build_last_block_refusal(ZooInputs(world, oracle, targets, retain), seed=0)
    result = run_heldout_relearn(world, refusing, targets, oracle)
    assert result.metrics["mean_unlearned"] < 0.05 and result.metrics["mean_before"] > 0.8
    excess = [result.recovered[c] - result.oracle.recovered[c] for c in result.recovered]
    assert sum(excess) / len(excess) > 0.5
    assert sum(e > 0.2 for e in excess) >= 0.9 * len(excess)
    assert result.oracle.metrics["mean_attacked"] < 0.1  # the oracle is taught other answers, not these
