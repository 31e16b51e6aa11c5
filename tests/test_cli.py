"""The CLI: help comes from the config docstrings; bad configs fail with the field named; stages are discoverable."""

from __future__ import annotations

from importlib import metadata

import pytest

from obliviate.cli import main


def test_stage_help_shows_config_docstrings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["locate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Noise std = this" in out and "Corrupted copies per fact" in out
    assert "--n_noise_samples" in out or "--n-noise-samples" in out


def test_world_train_help_prints_docstrings_with_percent_signs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["world", "train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "15% recall" in out and "--retrain" in out


def test_world_train_refuses_options_the_cache_does_not_hold(capsys):
    assert main(["world", "train", "--steps", "5"]) == 2
    assert "--out" in capsys.readouterr().err


def test_unknown_config_key_fails_naming_it(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("locate:\n  windw: 10\n")
    assert main(["locate", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'locate.windw'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, "a user error is one line"
    assert not (tmp_path / "run").exists(), "a failed config must not leave a run folder behind"


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("locate:\n  windw: 10\n")
    from obliviate.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'locate.windw'"):
        main(["locate", str(path), "--debug", "--out", str(tmp_path / "run")])


def test_a_missing_fact_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"facts: {tmp_path / 'absent.jsonl'}\n")
    assert main(["locate", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "absent.jsonl" in err and len(err.strip().splitlines()) == 1


def test_unknown_command_and_models_list(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_every_stage_command_has_an_entry_point():
    names = {entry.name for entry in metadata.entry_points(group="obliviate.stages")}
    assert {"locate", "edit", "audit", "run", "compare", "calibrate"} <= names


def test_flags_are_range_checked_like_yaml(tmp_path, capsys):
    assert main(["locate", "--max-targets", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "'locate.max_targets'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_stage_help_documents_resume_semantics(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "resumes" in out and "inputs changed is re-run, with every stage after it" in out


def test_a_stage_run_out_of_order_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from obliviate import cli
    from obliviate.results import RunDir

    monkeypatch.setattr("obliviate.preflight.check_run", lambda config: [])
    # a stage that reads an earlier stage's record, as audit reads edit's
    monkeypatch.setattr(cli, "_stage_entry",
                        lambda name: lambda config, run_dir, force: RunDir(run_dir.root).read("edit"))
    assert main(["audit", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no edit.json yet; run `obliviate edit` first" in err and "Traceback" not in err
