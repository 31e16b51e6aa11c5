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
    assert main(["world", "train", "--steps", "50"]) == 2
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
    assert {"locate", "edit", "audit", "run", "compare", "calibrate", "verify"} <= names


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


HELP_COMMANDS = [["locate"], ["edit"], ["audit"], ["run"], ["compare"], ["verify"], ["world"], ["world", "build"],
                 ["world", "train"], ["world", "info"], ["models"]]


def _help(capsys, argv: list[str]) -> str:
    try:
        code = main([*argv, "--help"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 0, f"{argv} --help exits {code}"
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], *HELP_COMMANDS], ids=lambda argv: " ".join(argv) or "obliviate")
def test_every_help_opens_with_the_users_path(capsys, argv):
    out = _help(capsys, argv)
    head = out.split("options:")[0]  # the path comes before any option list, in usage too
    assert "--max" not in head and "--window" not in head
    for step in ("make demo", "obliviate run configs/world-demo.yaml --out runs/world-demo",
                 "obliviate compare runs/world-demo --out runs/world-demo/report", "report.html", "table.md"):
        assert step in head, f"{argv} --help lacks {step!r}"


def test_top_level_help_names_every_command_and_no_internals(capsys):
    out = _help(capsys, [])
    assert out.startswith("obliviate: locate where")
    for command in ("run", "locate", "edit", "audit", "compare", "verify", "world", "models"):
        assert f"\n  {command} " in out, command
    assert "entry-point" not in out and "entry_points" not in out and "simple-parsing" not in out


def _audit_record(method: str, counts: dict[str, int], collateral: dict | None):
    from obliviate.results import StageRecord

    metrics = {"method": method, "verdict_counts": counts}
    if collateral is not None:
        metrics["collateral"] = collateral
    return StageRecord(stage=f"audit-{method}", config={}, metrics=metrics)


def test_compare_prints_the_report_and_a_line_per_method(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from obliviate.results import RunDir

    run_dir = RunDir(tmp_path / "world-demo")
    run_dir.write(_audit_record("memit", {"erased": 8, "suppressed": 9, "intact": 111},
                                {"forget_recall_edited": 0.87, "retain_recall_edited": 0.94}))
    run_dir.write(_audit_record("suppress", {"erased": 6, "suppressed": 122, "intact": 0}, None))
    out = tmp_path / "report"
    assert main(["compare", str(run_dir.root), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"report: {out / 'report.html'}" in lines and f"table:  {out / 'table.md'}" in lines
    assert "  memit: 8 erased, 9 suppressed, 111 intact; forget recall 0.87; retain recall 0.94" in lines
    assert "  suppress: 6 erased, 122 suppressed, 0 intact" in lines, "no recall recorded: counts only"
    assert (out / "report.html").is_file() and (out / "table.md").is_file()


def test_yaml_only_fields_reach_the_stage(tmp_path, monkeypatch):
    """audit.attacks, audit.peers and operating_point are YAML-only (no flag); the stage must get the YAML's, not the
    defaults."""
    from obliviate import cli

    config_path = tmp_path / "run.yaml"
    config_path.write_text("model: world\nfacts: world\nsplit: forget\nedits:\n  - {method: memit, goal: erase}\n"
                           "audit:\n  attacks: [keyword, {name: relearn, params: {steps: 3}}]\n"
                           "  reference: world-retain\n"
                           "  peers: [world-retain-2]\n"
                           "operating_point: {forget_recall: 0.2, max_retain_drop: 0.05}\n")
    seen = {}
    monkeypatch.setattr("obliviate.preflight.check_run", lambda config: [])
    monkeypatch.setattr(cli, "_stage_entry", lambda name: lambda config, run_dir, force: seen.update(config=config))
    assert main(["audit", str(config_path), "--out", str(tmp_path / "run")]) == 0
    config = seen["config"]
    assert [c if isinstance(c, str) else c.name for c in config.audit.attacks] == ["keyword", "relearn"]
    assert config.operating_point is not None and config.operating_point.max_retain_drop == 0.05
    assert config.audit.peers == ["world-retain-2"]


def test_every_yaml_only_field_is_carried_at_any_depth():
    """A field added later with `cmd=False` needs no hand-written carry line (three were once missed)."""
    from dataclasses import dataclass, field

    from obliviate.cli import _carry_yaml_only
    from simple_parsing.helpers import field as cli_field

    @dataclass
    class Inner:
        flag: int = 0
        yaml_only: list = cli_field(default_factory=list, cmd=False)

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        top_only: str = cli_field(default="default", cmd=False)
        flag: int = 0

    parsed, from_yaml = Outer(flag=2), Outer(inner=Inner(flag=1, yaml_only=[1, 2]), top_only="yaml", flag=1)
    _carry_yaml_only(parsed, from_yaml)
    assert parsed.top_only == "yaml" and parsed.inner.yaml_only == [1, 2]
    assert parsed.flag == 2 and parsed.inner.flag == 0  # flags keep what the command line said


def test_world_train_on_a_folder_that_is_no_world_names_world_and_the_fix(tmp_path, capsys):
    assert main(["world", "train", "--world", str(tmp_path), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "--world" in err and "obliviate world build --out" in err
    assert not (tmp_path / "model").exists()


def test_world_train_on_a_built_world_needs_out(tmp_path, capsys):
    (tmp_path / "world_info.json").write_text("{}")
    assert main(["world", "train", "--world", str(tmp_path)]) == 2
    assert "give --out" in capsys.readouterr().err


def test_world_train_trains_on_the_built_world_it_is_given(tmp_path, capsys):
    import json

    world = tmp_path / "small-world"
    assert main(["world", "build", "--n-subjects", "40", "--n-secrets", "8", "--n-forget-secrets", "2",
                 "--n-filler-train", "20", "--n-filler-heldout", "40", "--out", str(world)]) == 0
    out = tmp_path / "model"
    assert main(["world", "train", "--world", str(world), "--variant", "world", "--steps", "2", "--warmup-steps", "1",
                 "--n-embd", "16", "--n-layer", "1", "--tag-exit-weight", "0", "--eval-every", "0",
                 "--out", str(out)]) == 0
    info = json.loads((out / "training_info.json").read_text())
    assert info["variant"] == "world" and info["world_dir"] == str(world)
    from obliviate.world.config import TrainConfig
    from obliviate.world.corpus import training_texts

    # trained on the small world's texts, not on the cached 200-subject world's
    assert info["n_training_texts"] == len(training_texts(world, "world", TrainConfig().secret_repeats))
