"""Re-fit probe: on synthetic activations it decodes an attribute that is there, stays at chance when it is not,
flips a below-chance binary probe, and never trains on a target; on the world an output-only suppression leaves
the attribute decodable for the targets while the never-learned oracle gives much less."""

from __future__ import annotations

import numpy as np
import pytest

from audit.refit_probe import RefitProbeConfig, fit_relation_probe, probe_pool, refit_probe_scores, run_refit_probe
from _world import known_forget_targets

FAST = RefitProbeConfig(n_splits=3, inner_splits=2, C_grid=(0.1, 1.0))


def _data(rng, n, labels, signal: float, d: int = 8):
    """(depth=2, n, d): depth 0 is noise, depth 1 carries the label's one-hot times `signal`."""
    classes = sorted(set(labels))
    onehot = np.eye(d)[[classes.index(y) for y in labels]]
    noise = rng.normal(size=(2, n, d))
    noise[1] += signal * onehot
    return noise


def test_decodes_a_present_attribute_on_held_out_subjects():
    rng = np.random.default_rng(0)
    labels = [f"c{i % 4}" for i in range(80)]
    target_labels = [f"c{i % 4}" for i in range(12)]
    fit = fit_relation_probe(_data(rng, 80, labels, 4.0), labels, list(range(80)),
                             _data(rng, 12, target_labels, 4.0), depths=[0, 1], config=FAST)
    assert fit.summary.depth == 1 and fit.summary.cv_accuracy > 0.9
    p_true = fit.probs[np.arange(12), [fit.classes.index(y) for y in target_labels]]
    assert p_true.mean() > 0.8


def test_standardize_false_probes_the_raw_residual():
    """The config's `standardize` reaches the fits: an attribute carried at a thousandth of the other features'
    scale is decoded only when every feature is scaled to unit variance."""
    rng = np.random.default_rng(2)
    labels = [f"c{i % 4}" for i in range(80)]
    target_labels = [f"c{i % 4}" for i in range(12)]
    train, target = _data(rng, 80, labels, 4.0), _data(rng, 12, target_labels, 4.0)
    for acts in (train, target):
        acts[1, :, :4] *= 1e-3  # the one-hot lives in features 0–3: shrink them with their noise
    fits = {standardize: fit_relation_probe(train[1:], labels, list(range(80)), target[1:], depths=[1],
                                            config=RefitProbeConfig(n_splits=3, inner_splits=2, C_grid=(0.1,),
                                                                    standardize=standardize))
            for standardize in (True, False)}
    assert fits[True].summary.cv_accuracy > 0.9 and fits[False].summary.cv_accuracy < 0.5, \
        (fits[True].summary.cv_accuracy, fits[False].summary.cv_accuracy)


def test_identical_inputs_reuse_the_fit_and_any_change_refits(monkeypatch):
    import audit.refit_probe as refit

    calls = []
    fit_once = refit._fit_relation_probe
    monkeypatch.setattr(refit, "_fit_relation_probe", lambda *a: calls.append(1) or fit_once(*a))
    monkeypatch.setattr(refit, "_FIT_CACHE", type(refit._FIT_CACHE)())
    rng = np.random.default_rng(5)
    labels = [f"c{i % 4}" for i in range(40)]
    train, target = _data(rng, 40, labels, 4.0), _data(rng, 8, labels[:8], 4.0)
    first = fit_relation_probe(train, labels, list(range(40)), target, depths=[0, 1], config=FAST)
    first.probs[:] = -1.0  # a caller's change must not reach the stored fit
    again = fit_relation_probe(train.copy(), labels, list(range(40)), target, depths=[0, 1], config=FAST)
    assert len(calls) == 1 and again.probs.min() >= 0.0
    moved = target.copy()
    moved[1, 0, 0] += 1e-3  # one activation differs: a new fit
    fit_relation_probe(train, labels, list(range(40)), moved, depths=[0, 1], config=FAST)
    fit_relation_probe(train, labels, list(range(40)), target, depths=[0, 1], config=RefitProbeConfig(
        n_splits=3, inner_splits=2, C_grid=(1.0,)))
    assert len(calls) == 3


def test_stays_near_chance_without_the_attribute():
    rng = np.random.default_rng(1)
    labels = [f"c{i % 4}" for i in range(80)]
    target_labels = [f"c{i % 4}" for i in range(40)]
    fit = fit_relation_probe(_data(rng, 80, labels, 0.0), labels, list(range(80)),
                             _data(rng, 40, target_labels, 0.0), depths=[0, 1], config=FAST)
    p_true = fit.probs[np.arange(40), [fit.classes.index(y) for y in target_labels]]
    assert abs(p_true.mean() - 0.25) < 0.1


def test_below_chance_binary_probe_is_flipped():
    # balanced labels, one subject each, no signal: the held-out fold's majority is the training fold's minority
    rng = np.random.default_rng(2)
    labels = ["a", "b"] * 30
    acts = rng.normal(size=(1, 60, 4)) * 1e-3
    fit = fit_relation_probe(acts, labels, list(range(60)), acts[:, :4], depths=[0], config=FAST)
    assert fit.summary.flipped
    assert fit.summary.cv_accuracy >= 0.5  # reported as max(acc, 1 − acc)
    assert np.allclose(fit.probs.sum(1), 1.0)


@pytest.mark.slow
def test_world_probe_reads_an_output_suppression_like_the_base(world_handle, world_retain_handle):
    from audit.attack_result import clone_tl, with_tl
    from obliviate.hooks import LogitPenalty, attach_permanently
    from obliviate.targets import resolve_facts

    all_facts = resolve_facts("world")
    known = known_forget_targets(world_handle, 128)
    relation = max({f.relation_id for f in known}, key=lambda r: sum(f.relation_id == r for f in known))
    targets = [f for f in known if f.relation_id == relation][:16]
    pool = probe_pool(all_facts, targets, known_by=world_handle)
    assert pool and not {f.subject for f in pool} & {f.subject for f in targets}
    tl = clone_tl(world_handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple({world_handle.answer_token(f.target_true) for f in targets}), 20.0)])
    edited = with_tl(world_handle, tl)
    config = RefitProbeConfig(n_splits=3, inner_splits=2, C_grid=(0.1, 1.0))
    result = run_refit_probe(world_handle, edited, targets, pool, oracle=world_retain_handle, config=config)
    on_base = refit_probe_scores(world_handle, targets, pool, config)
    # an output-only edit leaves every residual as it was: the fresh probe reads exactly what it reads on the base
    assert all(on_base.scores[c].score == pytest.approx(result.recovered[c], abs=1e-9) for c in result.recovered)
    assert result.metrics["mean_unlearned"] < 1e-3 < result.metrics["mean_attacked"]
    # leaking the targets into the pool changes nothing: their subjects are filtered out
    leaked = refit_probe_scores(edited, targets, [*pool, *targets], config)
    assert all(leaked.scores[c].score == pytest.approx(result.recovered[c]) for c in result.recovered)
    assert result.oracle is not None and set(result.oracle.recovered) == set(result.recovered)


def test_every_depth_is_scored_and_the_verdict_finds_the_depth_the_edit_left():
    # training subjects carry the answer at depths 1 and 2 (strongest at 2, which the nested CV picks); the edited
    # model's targets carry it at depth 1 only (an edit of the last block), the oracle's at no depth
    from audit.verdict import judge

    rng = np.random.default_rng(3)
    labels = [f"c{i % 4}" for i in range(80)]
    target_labels = [f"c{i % 4}" for i in range(16)]

    def acts(n, labels_, signal_by_depth, noise=1.0):
        classes = sorted(set(labels))
        onehot = np.eye(8)[[classes.index(y) for y in labels_]]
        out = noise * rng.normal(size=(3, n, 8))
        for depth, signal in signal_by_depth.items():
            out[depth] += signal * onehot
        return out

    train = acts(80, labels, {1: 2.5, 2: 3.0})
    # the targets' states are quiet where they hold nothing (a never-learned model has no attribute to show there)
    edited = fit_relation_probe(train, labels, list(range(80)), acts(16, target_labels, {1: 2.5}, 0.1), [0, 1, 2],
                                config=FAST)
    oracle = fit_relation_probe(train, labels, list(range(80)), acts(16, target_labels, {}, 0.1), [0, 1, 2],
                                config=FAST)
    assert edited.summary.depth == 2 and set(edited.probs_by_depth) == {0, 1, 2}
    assert np.allclose(edited.probs_by_depth[2], edited.probs)  # the headline is the CV depth's

    def p_true(probs):
        return {c: float(probs[c, edited.classes.index(y)]) for c, y in enumerate(target_labels)}

    class Result:
        def __init__(self, fit):
            self.attack, self.recovered = "probe", p_true(fit.probs)
            self.sites = {f"depth {d}": p_true(p) for d, p in fit.probs_by_depth.items()}

    on_edited, on_oracle = Result(edited), Result(oracle)
    cases = list(range(16))
    assert np.mean(list(on_edited.sites["depth 1"].values())) > np.mean(list(on_oracle.sites["depth 1"].values())) + 0.3
    verdicts = judge(cases, {}, [on_edited], [on_oracle])
    assert verdicts.counts()["suppressed"] >= 14
    assert {t.site for t in verdicts.targets if t.verdict == "suppressed"} == {"depth 1"}
    # the CV depth alone sees nothing beyond the oracle
    headline = judge(cases, {}, [type("R", (), {"attack": "probe", "recovered": on_edited.recovered})()],
                     [type("R", (), {"attack": "probe", "recovered": on_oracle.recovered})()])
    assert headline.counts()["suppressed"] <= 2


def test_a_depth_the_model_does_not_have_is_an_error_naming_both():
    from _locate_tiny import tiny_facts, tiny_handle

    handle = tiny_handle("gpt2")
    with pytest.raises(ValueError, match=r"probe: depths asks for depth 9, but tiny-gpt2 has depths 0\.\.4"):
        refit_probe_scores(handle, tiny_facts()[:1], tiny_facts()[1:], RefitProbeConfig(depths=(1, 9)))
