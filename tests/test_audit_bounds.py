"""audit.max_retain / audit.max_heldout_texts bound the collateral and representation work; the record and the
report say what was sampled."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from audit.collateral import sample_facts
from audit.report import audit_metrics, sampling_note, write_report
from obliviate.config import ConfigError, RunConfig, from_dict
from obliviate.facts import Fact
from obliviate.results import RunDir


def _facts(n_relations=6, per_relation=20):
    return [Fact(case_id=r * per_relation + i, prompt="{} is", subject=f"S{r}-{i}", target_true=f"A{i % 3}",
                 target_new="B", relation_id=f"R{r}") for r in range(n_relations) for i in range(per_relation)]


def test_a_sample_is_seeded_ordered_and_spread_over_relations():
    facts = _facts()
    sample = sample_facts(facts, 12, seed=0)
    assert len(sample) == 12 and sample == sample_facts(facts, 12, seed=0)
    assert [f.case_id for f in sample] == sorted(f.case_id for f in sample)
    assert len({f.relation_id for f in sample}) > 1, "a prefix would hold one relation only"
    assert sample_facts(facts, None, seed=0) == facts and sample_facts(facts, 10_000, seed=0) == facts


def test_bounds_are_range_checked():
    with pytest.raises(ConfigError, match="'audit.max_retain'"):
        from_dict(RunConfig, {"audit": {"max_retain": 0}})
    with pytest.raises(ConfigError, match="'audit.max_heldout_texts'"):
        from_dict(RunConfig, {"audit": {"max_heldout_texts": -1}})


def test_the_audit_stage_scores_only_the_sample(tmp_path, monkeypatch):
    import audit.certificate
    import audit.collateral
    import audit.representation
    import audit.stage
    import edit.stage
    import obliviate.targets

    facts = _facts()
    targets, retain = facts[:4], facts[4:]
    seen = {}

    def collateral(base, edited, targets, retain, texts, config):
        seen["collateral"] = (len(retain), min(len(texts), config.max_heldout_texts))
        return SimpleNamespace(n_heldout_texts=seen["collateral"][1], to_metrics=lambda: {})

    def representation(base, edited, targets, retain):
        seen["representation"] = len(retain)
        return SimpleNamespace(to_metrics=lambda: {})

    verdicts = SimpleNamespace(counts=lambda: {}, margins={}, reference_kind="none",
                               by_case=lambda: {f.case_id: SimpleNamespace() for f in targets})
    monkeypatch.setattr(audit.stage, "load", lambda *a, **k: None)
    monkeypatch.setattr(audit.stage, "recalled_targets", lambda *a: {})
    monkeypatch.setattr(audit.stage, "judge", lambda *a, **k: verdicts)
    monkeypatch.setattr(edit.stage, "split_targets", lambda config: (targets, retain))
    monkeypatch.setattr(obliviate.targets, "resolve_facts", lambda *a, **k: facts)
    monkeypatch.setattr(audit.collateral, "heldout_texts", lambda **k: [f"line {i}" for i in range(900)])
    monkeypatch.setattr(audit.collateral, "measure_collateral", collateral)
    monkeypatch.setattr(audit.representation, "compare_representations", representation)
    monkeypatch.setattr(audit.representation, "plot_representation", lambda c, path, title: path)
    # no model was loaded, so there is nothing to certify (tests/test_certificate.py covers the certificate)
    monkeypatch.setattr(audit.certificate, "write_certificate", lambda *a, **k: tmp_path / "certificate.json")

    # no attack: this test is about the collateral and representation inputs
    config = from_dict(RunConfig, {"audit": {"attacks": [], "max_retain": 30, "max_heldout_texts": 50},
                                   "edits": [{"method": "none"}]})
    run = RunDir(tmp_path)
    (tmp_path / "edit-none" / "artefact").mkdir(parents=True)
    (tmp_path / "edit-none" / "artefact" / "manifest.json").write_text("{}")
    record = audit.stage.audit_edit(config, config.edits[0], run, base=None, oracle=None)
    assert seen == {"collateral": (30, 50), "representation": 30}
    assert record["metrics"]["sampled"] == sampling_note(30, len(retain), 50, 900, seed=0)


def test_the_report_says_what_was_sampled(tmp_path):
    record = {"stage": "audit-memit", "metrics": audit_metrics("memit", sampled=sampling_note(64, 1152, 400, 400,
                                                                                             seed=3))}
    html = write_report([{"name": "run", "audit-memit": record}], tmp_path).read_text()
    assert "read 64 of 1152 retain facts (seeded random sample (seed 3)) and 400 of 400 held-out texts (all)" in html
