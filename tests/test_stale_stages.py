"""A finished stage is reused only when it ran with the same inputs; a changed config re-runs it and every stage
after it, and says so (no model needed: the decisions are made on the records)."""

from __future__ import annotations

from audit.stage import audit_inputs
from audit.stage import stage_name as audit_stage
from edit.stage import edit_inputs
from edit.stage import stage_name as edit_stage
from obliviate.config import RunConfig, from_dict
from obliviate.results import RunDir, StageRecord, stage_inputs

BEFORE = {"limit": 8, "audit": {"attacks": ["keyword", "logit_lens"]}, "edits": [{"method": "memit"}]}


def _finish_all(run: RunDir, config: RunConfig) -> None:
    """Write the three records as the stages would, in order (each reads the one before)."""
    run.write(StageRecord(stage="locate", config={}, inputs=stage_inputs(config, locate=config.locate)))
    edit = config.edits[0]
    run.write(StageRecord(stage=edit_stage(edit), config={}, inputs=edit_inputs(config, edit, run)))
    run.write(StageRecord(stage=audit_stage(edit), config={}, inputs=audit_inputs(config, edit, run)))


def test_same_config_skips_every_stage(tmp_path, capsys):
    run, config = RunDir(tmp_path), from_dict(RunConfig, BEFORE)
    _finish_all(run, config)
    edit = config.edits[0]
    assert run.should_skip("locate", stage_inputs(config, locate=config.locate))
    assert run.should_skip(edit_stage(edit), edit_inputs(config, edit, run))
    assert run.should_skip(audit_stage(edit), audit_inputs(config, edit, run))
    assert capsys.readouterr().out.count("already finished") == 3
    assert not run.should_skip("locate", stage_inputs(config, locate=config.locate), force=True)


def test_a_changed_limit_reruns_locate_and_every_stage_after_it(tmp_path, capsys):
    run = RunDir(tmp_path)
    _finish_all(run, from_dict(RunConfig, BEFORE))
    config = from_dict(RunConfig, {**BEFORE, "limit": 4})
    locate_inputs = stage_inputs(config, locate=config.locate)
    assert not run.should_skip("locate", locate_inputs)
    assert "limit: 8 → 4" in capsys.readouterr().out
    run.write(StageRecord(stage="locate", config={}, inputs=locate_inputs))  # locate re-ran
    edit = config.edits[0]
    assert not run.should_skip(edit_stage(edit), edit_inputs(config, edit, run))
    run.write(StageRecord(stage=edit_stage(edit), config={}, inputs=edit_inputs(config, edit, run)))
    assert not run.should_skip(audit_stage(edit), audit_inputs(config, edit, run))
    assert "re-running" in capsys.readouterr().out


def test_a_changed_attack_list_reruns_only_the_audit(tmp_path, capsys):
    run = RunDir(tmp_path)
    _finish_all(run, from_dict(RunConfig, BEFORE))
    config = from_dict(RunConfig, {**BEFORE, "audit": {"attacks": ["keyword"]}})
    edit = config.edits[0]
    assert run.should_skip("locate", stage_inputs(config, locate=config.locate))
    assert run.should_skip(edit_stage(edit), edit_inputs(config, edit, run))
    assert not run.should_skip(audit_stage(edit), audit_inputs(config, edit, run))
    assert 'audit.attacks: ["keyword", "logit_lens"] → ["keyword"]' in capsys.readouterr().out


def test_progress_bars_are_not_an_input(tmp_path):
    run = RunDir(tmp_path)
    _finish_all(run, from_dict(RunConfig, BEFORE))
    quiet = from_dict(RunConfig, {**BEFORE, "locate": {"show_progress": False}})
    assert run.should_skip("locate", stage_inputs(quiet, locate=quiet.locate))


def test_a_record_without_inputs_is_rerun(tmp_path, capsys):
    run, config = RunDir(tmp_path), from_dict(RunConfig, BEFORE)
    run.write(StageRecord(stage="locate", config={}))
    assert not run.should_skip("locate", stage_inputs(config, locate=config.locate))
    assert "predates" in capsys.readouterr().out
