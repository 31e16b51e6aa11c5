"""The audit certificate and `obliviate verify`: an audit on the world writes certificate.json with the sha256 of every
file it read; verify on an untouched run re-runs the audit and reports identical verdicts; one changed byte of a
hashed file is refused naming that file and both digests; a verdict changed by hand is reported naming its target.
The rules of the comparison and the bad-input errors are checked on constructed certificates first (no model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit.certificate import CERTIFICATE, KIND, config_sha256, target_verdicts
from audit.verify import (CertificateError, CertificateMismatchError, check_files, load_certificate,
                          verdict_differences)
from obliviate.cli import main
from obliviate.integrity import file_sha256

ROW = {"case_id": 7, "subject": "Ana Vey", "target_true": "Oslo", "verdict": "erased", "attack": "keyword",
       "recovered": 0.01, "reference": 0.02, "excess": -0.01, "margin": 0.1, "reference_kind": "oracle",
       "excess_by_attack": {"keyword": -0.01}, "reason": "keyword: recovered 0.010 vs oracle 0.020"}


def test_the_comparison_names_the_target_and_field_that_differ():
    assert verdict_differences([ROW], [dict(ROW)]) == []
    nudged = {**ROW, "excess": -0.01 + 1e-9, "excess_by_attack": {"keyword": -0.01 + 1e-9}}
    assert verdict_differences([ROW], [nudged], tolerance=1e-6) == [], "within the tolerance"
    assert [d.field for d in verdict_differences([ROW], [nudged], tolerance=0)] == ["excess", "excess_by_attack"]
    [flipped] = verdict_differences([ROW], [{**ROW, "verdict": "suppressed"}])
    assert (flipped.target, flipped.field, flipped.certified, flipped.rerun) == \
        ("case 7 (Ana Vey)", "verdict", "erased", "suppressed")
    [missing] = verdict_differences([ROW], [])
    assert missing.target == "case 7 (Ana Vey)" and missing.rerun == "absent"
    assert target_verdicts([{**ROW, "attacks": {"keyword": {}}}]) == [ROW], "the certificate keeps the evidence only"


def test_attacks_are_certified_with_their_full_settings_and_seed():
    from audit.certificate import attack_settings
    from obliviate.config import RunConfig, from_dict

    config = from_dict(RunConfig, {"seed": 5, "audit": {"attacks": ["keyword", {"name": "relearn",
                                                                                 "params": {"steps": 3}}]}})
    keyword, relearn = attack_settings(config)
    assert keyword["name"] == "keyword" and keyword["seed"] is None and "n_keywords" in keyword["settings"]
    assert relearn["name"] == "relearn" and relearn["seed"] == relearn["settings"]["seed"] == 5, "the run's seed"
    assert relearn["settings"]["steps"] == 3 and "lr" in relearn["settings"], "defaults filled in"


def _hand_made(tmp_path: Path) -> Path:
    """A run folder with one artefact file and a certificate for it (no audit ran)."""
    artefact = tmp_path / "run" / "edit-x" / "artefact" / "changed.safetensors"
    artefact.parent.mkdir(parents=True)
    artefact.write_bytes(b"\x00" * 64)
    config = {"model": "world", "seed": 0, "edits": [{"method": "x"}]}
    certificate = {"kind": KIND, "version": 1, "edit": "x", "config": config, "config_sha256": config_sha256(config),
                   "files": [{"role": "edit artefact", "path": "edit-x/artefact/changed.safetensors",
                              "sha256": file_sha256(artefact)}], "verdicts": [ROW]}
    path = tmp_path / "run" / "audit-x" / CERTIFICATE
    path.parent.mkdir()
    path.write_text(json.dumps(certificate))
    return path


def test_hashes_are_checked_relative_to_the_run_folder_and_a_changed_byte_is_refused(tmp_path):
    path = _hand_made(tmp_path)
    assert check_files(load_certificate(path), path) == 1
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)  # a moved run folder still verifies
    path = moved / "audit-x" / CERTIFICATE
    assert check_files(load_certificate(path), path) == 1
    artefact = moved / "edit-x" / "artefact" / "changed.safetensors"
    certified = file_sha256(artefact)
    artefact.write_bytes(b"\x00" * 63 + b"\x01")
    with pytest.raises(CertificateMismatchError) as error:
        check_files(load_certificate(path), path)
    assert str(artefact) in str(error.value) and certified in str(error.value)
    assert file_sha256(artefact) in str(error.value)


def test_a_config_changed_after_the_audit_is_refused(tmp_path):
    path = _hand_made(tmp_path)
    certificate = json.loads(path.read_text())
    certificate["config"]["seed"] = 1
    path.write_text(json.dumps(certificate))
    with pytest.raises(CertificateMismatchError, match="config"):
        check_files(load_certificate(path), path)


@pytest.mark.parametrize("damage, named", [(lambda c: c.pop("files"), "'files'"),
                                           (lambda c: c.update(kind="report"), "not an audit certificate"),
                                           (lambda c: c["files"][0].pop("sha256"), "'files[0]'"),
                                           (lambda c: c["files"][0].update(path="../../x"), "'files[0].path'"),
                                           (lambda c: c["config"].update(edits=[]), "'config.edits'")])
def test_a_bad_certificate_names_the_field(tmp_path, damage, named):
    path = _hand_made(tmp_path)
    certificate = json.loads(path.read_text())
    damage(certificate)
    path.write_text(json.dumps(certificate))
    with pytest.raises(CertificateError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_certificate(path)


def test_a_certificate_that_is_not_json_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / CERTIFICATE
    path.write_text("{ not json")
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not JSON" in err and len(err.strip().splitlines()) == 1


CONFIG = """\
model: world
facts: world
split: forget
limit: 3
seed: 0
edits:
  - {method: suppress, goal: erase}
audit:
  attacks: [keyword]
  reference: world-retain
  max_retain: 4
  max_heldout_texts: 4
  show_progress: false
"""


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """One cheap real audit on the world (3 targets, one attack, small collateral samples): its run folder."""
    folder = tmp_path_factory.mktemp("certified")
    config = folder / "run.yaml"
    config.write_text(CONFIG)
    run = folder / "run"
    assert main(["edit", str(config), "--out", str(run)]) == 0
    assert main(["audit", str(config), "--out", str(run)]) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run" / "audit-suppress" / CERTIFICATE


def test_an_audit_writes_a_certificate_of_what_it_read(audited):
    from obliviate.models import resolve_hf_dir

    certificate = load_certificate(audited / "audit-suppress" / CERTIFICATE)
    record = json.loads((audited / "audit-suppress.json").read_text())
    assert "audit-suppress/certificate.json" in record["artefacts"]
    by_path = {entry["path"]: entry for entry in certificate["files"]}
    artefact = sorted(p for p in (audited / "edit-suppress").rglob("*") if p.is_file())
    assert artefact, "the suppress edit leaves files to certify"
    for path in [*artefact, audited / "edit-suppress.json"]:
        assert by_path[str(path.relative_to(audited))]["sha256"] == file_sha256(path)
    for name in ("world", "world-retain"):
        weights = resolve_hf_dir(name) / "model.safetensors"
        assert by_path[str(weights)]["sha256"] == file_sha256(weights)
    assert {e["role"] for e in certificate["files"]} >= {"facts", "held-out text", "base model (world)",
                                                         "reference model (world-retain)"}
    [attack] = certificate["attacks"]
    assert attack["name"] == "keyword" and attack["settings"]["n_keywords"] >= 1
    assert attack["seed"] is None, "the keyword attack draws nothing at random"
    assert [e["method"] for e in certificate["config"]["edits"]] == ["suppress"], "the config of this audit's edit"
    assert [v["verdict"] for v in certificate["verdicts"]] == [t["verdict"] for t in record["targets"]]
    assert all(v["reason"] and v["attack"] for v in certificate["verdicts"])
    assert certificate["versions"]["torch"] and certificate["config_sha256"] == config_sha256(certificate["config"])


def test_verify_of_an_untouched_run_reports_identical(audited, tmp_path, capsys):
    assert main(["verify", str(_copy(audited, tmp_path)), "--tolerance", "0"]) == 0
    out = capsys.readouterr().out
    assert "identical: 3 verdicts re-run and equal" in out and "DIFFERENT" not in out


def test_verify_refuses_one_changed_byte_naming_the_file(audited, tmp_path, capsys):
    path = _copy(audited, tmp_path)
    certificate = json.loads(path.read_text())
    entry = next(e for e in certificate["files"] if e["role"] == "edit artefact" and e["path"].endswith(".safetensors"))
    tampered = tmp_path / "run" / entry["path"]
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 2
    captured = capsys.readouterr()
    assert str(tampered) in captured.err and entry["sha256"] in captured.err
    assert file_sha256(tampered) in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "re-running" not in captured.out, "nothing is re-run on a changed input"


def test_verify_reports_a_verdict_changed_by_hand_naming_the_target(audited, tmp_path, capsys):
    path = _copy(audited, tmp_path)
    certificate = json.loads(path.read_text())
    row = certificate["verdicts"][1]
    honest = row["verdict"]
    row["verdict"] = "intact" if honest != "intact" else "erased"
    path.write_text(json.dumps(certificate))
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"| case {row['case_id']} ({row['subject']}) | verdict | {row['verdict']} | {honest} |" in out
    assert out.count("| case ") == 1, "only the changed target differs"
