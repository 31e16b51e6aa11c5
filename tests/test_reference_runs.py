"""The audit stage's shared reference runs: the oracle's and the peers' attack runs are computed once per
(attack, settings, targets) and reused by every edit, and what an edit's audit gets is what running the attack
with the oracle bound returns."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import audit.reference_runs
from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import AttackContext, nest_oracle, run_attack
from audit.reference_runs import ReferenceRuns
from obliviate.registry import ATTACKS


def perturbed(handle, seed: int, name: str, scale: float = 0.5):
    """Another model of the same shape (its weights moved by seeded noise) — a stand-in for another checkpoint."""
    tl = copy.deepcopy(handle.tl)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in tl.parameters():
            parameter.add_(scale * parameter.std() * torch.randn(parameter.shape, generator=generator))
    return dataclasses.replace(handle, tl=tl, name=name)


@pytest.fixture(scope="module")
def models():
    base = tiny_handle("gpt2")
    return {"base": base, "oracle": perturbed(base, 1, "oracle"), "peer": perturbed(base, 2, "peer"),
            "edit-a": perturbed(base, 3, "edit-a", 0.2), "edit-b": perturbed(base, 4, "edit-b", 0.2)}


def records(result):
    return result.target_records(), result.metrics, result.handle_name


@pytest.mark.parametrize("name", ["logit_lens", "keyword"])
def test_a_shared_run_equals_the_attack_run_with_the_oracle_bound(models, name):
    facts, cfg = tiny_facts(), ATTACKS.get(name).params()
    base, oracle, peer = models["base"], models["oracle"], models["peer"]
    references = ReferenceRuns(oracle, [peer])
    for edited in (models["edit-a"], models["edit-b"]):
        shared, peer_runs = references.run(name, base, edited, facts, cfg, AttackContext(oracle=oracle))
        direct = run_attack(name, base, edited, facts, cfg, AttackContext(oracle=oracle))
        assert records(shared) == records(direct)
        assert records(shared.oracle) == records(direct.oracle)
        assert shared.metrics["mean_excess_over_oracle"] is not None
        assert [records(r) for r in peer_runs] == [records(run_attack(name, base, peer, facts, cfg))]
    # the two edits differ, the oracle's nested run does not
    a, _ = references.run(name, base, models["edit-a"], facts, cfg, AttackContext(oracle=oracle))
    b, _ = references.run(name, base, models["edit-b"], facts, cfg, AttackContext(oracle=oracle))
    assert a.recovered != b.recovered and a.oracle is b.oracle


def test_the_oracle_and_peers_are_attacked_once_per_attack_and_settings(models, monkeypatch):
    attacked: list[str] = []
    real = audit.reference_runs.run_attack

    def counting(name, base, handle, *args):
        attacked.append(f"{name}:{handle.name}")
        return real(name, base, handle, *args)

    monkeypatch.setattr(audit.reference_runs, "run_attack", counting)
    facts, entry = tiny_facts(), ATTACKS.get("logit_lens")
    references = ReferenceRuns(models["oracle"], [models["peer"]])
    for edited in ("edit-a", "edit-b", "edit-a"):
        references.run("logit_lens", models["base"], models[edited], facts, entry.params({"k": 2}), AttackContext())
    assert sorted(attacked) == sorted(["logit_lens:peer", "logit_lens:oracle", "logit_lens:edit-a",
                                       "logit_lens:edit-b", "logit_lens:edit-a"])
    attacked.clear()
    references.run("logit_lens", models["base"], models["edit-a"], facts, entry.params({"k": 3}), AttackContext())
    references.run("logit_lens", models["base"], models["edit-a"], facts[:2], entry.params({"k": 2}),
                   AttackContext())
    # other settings or other targets are other runs
    assert attacked.count("logit_lens:oracle") == 2 and attacked.count("logit_lens:peer") == 2
    assert references.computed == 3


def test_without_an_oracle_nothing_is_nested_and_no_peer_runs(models):
    references = ReferenceRuns(None, [models["peer"]])
    result, peer_runs = references.run("logit_lens", models["base"], models["edit-a"], tiny_facts(),
                                       ATTACKS.get("logit_lens").params(), AttackContext())
    assert result.oracle is None and peer_runs == []


def test_an_oracle_run_of_another_attack_is_refused(models):
    facts = tiny_facts()
    edited = run_attack("logit_lens", models["base"], models["edit-a"], facts)
    oracle = run_attack("base_lens", models["base"], models["oracle"], facts)
    with pytest.raises(ValueError, match="cannot nest an oracle run of base_lens in a run of logit_lens"):
        nest_oracle(edited, oracle)


def test_the_never_taught_models_relearn_once_per_settings_and_targets(models, monkeypatch):
    import audit.relearn_speed
    from audit.relearn_speed import RelearnSpeedConfig

    calls = []
    real = audit.relearn_speed.relearn_speed
    monkeypatch.setattr(audit.relearn_speed, "relearn_speed", lambda m, *a: calls.append(m.name) or real(m, *a))
    references = ReferenceRuns(models["oracle"], [models["peer"]])
    facts, settings = tiny_facts(), RelearnSpeedConfig(steps=2, lr=1e-2, batch_size=3)
    first = references.relearn_speeds(facts, settings)
    assert calls == ["oracle", "peer"] and [sorted(s) for s in first] == [[0, 1, 2]] * 2
    assert references.relearn_speeds(facts, settings) is first and calls == ["oracle", "peer"]  # a second edit
    references.relearn_speeds(facts, RelearnSpeedConfig(steps=3, lr=1e-2, batch_size=3))
    assert calls == ["oracle", "peer"] * 2  # other settings relearn again
