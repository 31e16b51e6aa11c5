"""`obliviate verify <certificate.json>`: re-check an audit certificate's hashes, then re-run the audit and compare.

1. Every file the certificate lists is hashed again; a missing file or a different sha256 is refused (exit 2) with
   the file and both digests named, as is a config that no longer matches its ``config_sha256``. Nothing is re-run
   on inputs that are not the certified ones.
2. The audit is re-run from the certificate's config into a temporary folder: the run-folder files it lists (the
   edit artefact and record, locate's SAE) are copied there, the models and facts load from the cache as in the
   original run. The re-run writes its own certificate; its inputs must be the certified files (same paths, same
   digests), or it audited something else and the difference is reported.
3. The verdicts are compared target by target: verdict, deciding attack and reference kind exactly, the figures
   within `tolerance` (0 would demand bit-identical floats; a GPU re-run may differ in the last bits). Exit 0 when
   every verdict matches, 1 with a table of the differences otherwise.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.certificate import CERTIFICATE, CERTIFICATE_VERSION, EVIDENCE, KIND, config_sha256
from obliviate.errors import UserError
from obliviate.integrity import file_sha256

REQUIRED = {"kind": str, "version": int, "edit": str, "config": dict, "config_sha256": str, "files": list,
            "verdicts": list}
EXACT = ("verdict", "attack", "reference_kind")
"""Evidence compared exactly; the rest are figures compared within the tolerance (`reason` says them in words and
is not compared: its 3-decimal rounding may flip on a difference the tolerance allows)."""


class CertificateError(UserError, ValueError):
    """A certificate that cannot be read or lacks a field; the message names the field."""


class CertificateMismatchError(UserError, RuntimeError):
    """A certified file is missing or its sha256 differs from the certified one; the message names both."""


@dataclass(frozen=True)
class Difference:
    """One field of one target (or one input) where the re-run differs from the certificate."""

    target: str
    """'case <id> (<subject>)', or 'input' for a file the re-run read differently."""
    field: str
    certified: Any
    rerun: Any


def load_certificate(path: Path) -> dict[str, Any]:
    """The certificate at `path`, its required fields checked."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(f"no certificate at {path}; give the certificate.json an audit wrote "
                               f"(<run>/audit-<label>/{CERTIFICATE}).")
    try:
        certificate = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CertificateError(f"certificate {path} is not JSON ({error}); give the file an audit wrote.") from None
    if not isinstance(certificate, dict) or certificate.get("kind") != KIND:
        raise CertificateError(f"{path} is not an audit certificate (its 'kind' is not {KIND!r}).")
    for field, kind in REQUIRED.items():
        if not isinstance(certificate.get(field), kind):
            raise CertificateError(f"certificate {path}: field '{field}' is missing or not a {kind.__name__}; "
                                   f"re-run the audit (`obliviate audit --force`) to write a new certificate.")
    if certificate["version"] != CERTIFICATE_VERSION:
        raise CertificateError(f"certificate {path}: version {certificate['version']} is not the {CERTIFICATE_VERSION}"
                               f" this obliviate reads; verify it with the obliviate version that wrote it.")
    for i, entry in enumerate(certificate["files"]):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("path", "sha256"))):
            raise CertificateError(f"certificate {path}: field 'files[{i}]' needs a 'path' and a 'sha256'.")
        if ".." in Path(entry["path"]).parts:  # the re-run copies run-folder files: never outside its folder
            raise CertificateError(f"certificate {path}: field 'files[{i}].path' {entry['path']!r} leaves the run "
                                   f"folder; a certificate lists run-folder files by their path inside it.")
    edits = certificate["config"].get("edits")
    if not (isinstance(edits, list) and len(edits) == 1):
        raise CertificateError(f"certificate {path}: field 'config.edits' must hold the one audited edit.")
    return certificate


def run_root(certificate_path: Path) -> Path:
    """The run folder: the certificate lies in its ``audit-<label>/`` folder, and relative paths start there."""
    return Path(certificate_path).resolve().parent.parent


def check_files(certificate: dict[str, Any], certificate_path: Path) -> int:
    """Refuse (CertificateMismatchError) unless every certified file and the config match; returns the files checked."""
    if config_sha256(certificate["config"]) != certificate["config_sha256"]:
        raise CertificateMismatchError(
            f"certificate {certificate_path}: its config hashes to {config_sha256(certificate['config'])}, not the "
            f"certified {certificate['config_sha256']}; the config was changed after the audit.")
    root = run_root(certificate_path)
    for entry in certificate["files"]:
        path = root / entry["path"]  # an absolute path stays itself
        if not path.is_file():
            raise CertificateMismatchError(f"certified file {path} ({entry.get('role', 'input')}) is missing; "
                                           f"a relative path is read from the run folder {root}.")
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise CertificateMismatchError(f"certified file {path} ({entry.get('role', 'input')}) has changed: its "
                                           f"sha256 is {actual}, the certificate says {entry['sha256']}.")
    return len(certificate["files"])


def rerun(certificate: dict[str, Any], certificate_path: Path, folder: Path) -> dict[str, Any]:
    """Re-run the certified audit into `folder`; returns the re-run's certificate."""
    from audit.stage import audit_edit, stage_name
    from obliviate.config import RunConfig, from_dict
    from obliviate.models import load
    from obliviate.results import RunDir

    config = from_dict(RunConfig, certificate["config"])
    root = run_root(certificate_path)
    for entry in certificate["files"]:
        if not Path(entry["path"]).is_absolute():  # a run-folder file: the re-run reads its copy
            copy = folder / entry["path"]
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / entry["path"], copy)
    run_dir = RunDir(folder)
    base = load(config.model, device=config.device)
    oracle = load(config.audit.reference, device=config.device) if config.audit.reference else None
    edit = config.edits[0]
    audit_edit(config, edit, run_dir, base=base, oracle=oracle, force=True)
    return json.loads((run_dir.root / stage_name(edit) / CERTIFICATE).read_text())


def _same(certified: Any, rerun: Any, tolerance: float) -> bool:
    if isinstance(certified, dict) and isinstance(rerun, dict):
        return certified.keys() == rerun.keys() and all(_same(certified[k], rerun[k], tolerance) for k in certified)
    numbers = (int, float)
    if isinstance(certified, numbers) and isinstance(rerun, numbers) and not isinstance(certified, bool):
        return math.isclose(certified, rerun, rel_tol=0.0, abs_tol=tolerance)
    return certified == rerun


def verdict_differences(certified: list[dict[str, Any]], rerun: list[dict[str, Any]], tolerance: float = 1e-6
                        ) -> list[Difference]:
    """Field by field, target by target: where the re-run's verdicts and evidence differ from the certified ones."""
    old = {row.get("case_id"): row for row in certified}
    new = {row.get("case_id"): row for row in rerun}
    differences = []
    for case_id in sorted(old.keys() | new.keys(), key=str):
        row = old.get(case_id) or new[case_id]
        target = f"case {case_id} ({row.get('subject')})"
        if case_id not in new or case_id not in old:
            differences.append(Difference(target, "target", "certified" if case_id in old else "absent",
                                          "re-run" if case_id in new else "absent"))
            continue
        for field in EVIDENCE:
            if field == "reason":
                continue
            a, b = old[case_id].get(field), new[case_id].get(field)
            if (a != b) if field in EXACT else not _same(a, b, tolerance):
                differences.append(Difference(target, field, a, b))
    return differences


def input_differences(certified: dict[str, Any], rerun: dict[str, Any]) -> list[Difference]:
    """Files the re-run read that the certificate does not list with the same digest, and the reverse."""
    def files(certificate: dict[str, Any]) -> dict[str, str]:
        return {entry["path"]: entry["sha256"] for entry in certificate["files"]}

    old, new = files(certified), files(rerun)
    return [Difference("input", path, old.get(path, "not read"), new.get(path, "not read"))
            for path in sorted(old.keys() | new.keys()) if old.get(path) != new.get(path)]


def difference_table(differences: list[Difference]) -> str:
    """A Markdown table: one row per differing field."""
    def shown(value: Any) -> str:
        if isinstance(value, float):
            text = f"{value:.6g}"
        else:
            text = json.dumps(value) if isinstance(value, dict) else str(value)
        return text.replace("|", "\\|")

    rows = ["| target | field | certified | re-run |", "|---|---|---|---|"]
    rows += [f"| {d.target} | {d.field} | {shown(d.certified)} | {shown(d.rerun)} |" for d in differences]
    return "\n".join(rows)


def verify(certificate_path: Path, tolerance: float = 1e-6) -> int:
    """The `obliviate verify` command (see the module docstring): 0 when identical, 1 with a table otherwise."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise CertificateError(f"--tolerance {tolerance}: give a finite number ≥ 0 (0 = bit-identical figures).")
    certificate_path = Path(certificate_path)
    certificate = load_certificate(certificate_path)
    n_files = check_files(certificate, certificate_path)
    print(f"verify: {n_files} certified files match their sha256; re-running audit of edit "
          f"{certificate['edit']!r} in a temporary folder")
    for note in certificate.get("unhashed", []):
        print(f"verify: not hashed: {note.get('role')} {note.get('source')} ({note.get('why')})")
    with tempfile.TemporaryDirectory(prefix="obliviate-verify-") as folder:
        again = rerun(certificate, certificate_path, Path(folder))
    differences = input_differences(certificate, again)
    differences += verdict_differences(certificate["verdicts"], again["verdicts"], tolerance)
    if not differences:
        print(f"verify: identical: {len(certificate['verdicts'])} verdicts re-run and equal "
              f"(figures within {tolerance:g})")
        return 0
    changed = sorted({d.target for d in differences})
    print(f"verify: DIFFERENT: {len(changed)} of {len(certificate['verdicts'])} targets or inputs differ\n")
    print(difference_table(differences))
    return 1
