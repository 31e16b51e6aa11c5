"""Collateral damage: no change is measured as none; hiding the answers shows up where it must."""

from __future__ import annotations

import pytest

from audit.collateral import Change, CollateralConfig, heldout_texts, measure_collateral, neighbourhood_only


def test_change_is_edited_minus_base():
    change = Change(base=0.8, edited=0.5)
    assert change.delta == pytest.approx(-0.3)
    assert change.as_dict() == {"base": 0.8, "edited": 0.5, "delta": pytest.approx(-0.3)}


def test_heldout_texts_skips_blank_lines_and_limits(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("one\n\n two \nthree\n")
    assert heldout_texts(path) == ["one", "two", "three"]
    assert heldout_texts(path, limit=2) == ["one", "two"]


@pytest.fixture(scope="module")
def world_sets():
    from obliviate.targets import resolve_facts

    return resolve_facts("world", split="forget")[:24], resolve_facts("world", split="retain")[:200]


def _penalised(handle, token_ids, penalty=20.0):
    from audit.attack_result import clone_tl, with_tl
    from obliviate.hooks import LogitPenalty

    hook = LogitPenalty(tuple(token_ids), penalty)
    tl = clone_tl(handle.tl)
    tl.add_perma_hook(hook.hook_name, hook)
    return with_tl(handle, tl)


@pytest.mark.slow
def test_an_unchanged_model_has_no_collateral(world_handle, world_sets):
    targets, retain = world_sets
    report = measure_collateral(world_handle, world_handle, targets, retain, heldout_texts(limit=60),
                                CollateralConfig())
    for name in ("neighborhood_ns", "neighborhood_nm", "retain_recall", "forget_recall", "heldout_perplexity"):
        assert getattr(report, name).delta == pytest.approx(0.0, abs=1e-9), name
    assert report.forget_recall.base > 0.8  # the world model knows its facts
    assert report.n_neighborhood_prompts == sum(len(f.neighborhood_prompts) for f in targets) > 0


@pytest.mark.slow
def test_hiding_the_answers_hits_targets_neighbours_and_retained_facts_that_share_them(world_handle, world_sets):
    targets, retain = world_sets
    answers = {world_handle.answer_token(f.target_true) for f in targets}
    edited = _penalised(world_handle, sorted(answers))
    report = measure_collateral(world_handle, edited, targets, retain, heldout_texts(limit=60))
    assert report.forget_recall.edited < 0.05
    # neighbourhood prompts share the targets' true answers: the penalty hits them too (NS measures exactly this)
    assert report.neighborhood_ns.delta < -50.0
    sharing = [f for f in retain if world_handle.answer_token(f.target_true) in answers]
    others = [f for f in retain if world_handle.answer_token(f.target_true) not in answers]
    assert sharing and others
    # retain recall falls by about the share of retained facts whose answer was hidden, not more
    from obliviate.metrics import recall

    expected_drop = recall(world_handle, sharing) * len(sharing) / len(retain)
    assert report.retain_recall.delta == pytest.approx(-expected_drop, abs=0.02)
    assert report.heldout_perplexity.delta >= 0.0


@pytest.mark.slow
def test_penalising_an_unused_token_leaves_facts_alone(world_handle, world_sets):
    targets, retain = world_sets
    used = {world_handle.answer_token(f.target_true) for f in [*targets, *retain]}
    used |= {world_handle.answer_token(f.target_new) for f in targets}
    unused = next(t for t in range(world_handle.tl.cfg.d_vocab - 1, 0, -1) if t not in used)
    report = measure_collateral(world_handle, _penalised(world_handle, [unused]), targets, retain, [])
    assert report.retain_recall.delta == pytest.approx(0.0, abs=1e-9)
    assert report.forget_recall.delta == pytest.approx(0.0, abs=1e-9)
    assert report.neighborhood_ns.delta == pytest.approx(0.0, abs=1e-9)
    assert len(neighbourhood_only(targets)) == len(targets)


def test_same_relation_ns_is_reported_base_and_edited_beside_ns(monkeypatch):
    import audit.collateral
    from obliviate.metrics import CounterFactScores

    def scores(handle, facts):
        ns_rel = {"base": 90.0, "edited": 40.0}[handle]
        return CounterFactScores(es=0, ps=0, ns=float("nan"), s=0, em=0, pm=0, nm=float("nan"), n_facts=1,
                                 ns_same_relation=ns_rel, nm_same_relation=ns_rel / 2)

    monkeypatch.setattr(audit.collateral, "counterfact_scores", scores)
    monkeypatch.setattr(audit.collateral, "recall", lambda handle, facts: 1.0)
    monkeypatch.setattr(audit.collateral, "perplexity", lambda handle, texts: 10.0)
    metrics = measure_collateral("base", "edited", [], [], ["text"]).to_metrics()
    assert (metrics["neighborhood_ns_same_relation_base"], metrics["neighborhood_ns_same_relation_edited"],
            metrics["neighborhood_ns_same_relation_delta"]) == (90.0, 40.0, -50.0)
    assert metrics["neighborhood_nm_same_relation_delta"] == -25.0
    assert "neighborhood_ns_edited" in metrics, "the key the report reads stays"
