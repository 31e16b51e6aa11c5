"""The audit certificate: every file one audit read (by sha256), how it attacked, and the verdict it gave each target.

Every audit that runs writes ``<run>/audit-<label>/certificate.json`` (atomically, just before its record, so a
finished audit has one; an audit finished before certificates existed gets one from ``obliviate audit --force``):

- ``files``: role, path and sha256 of each input — the base model's and the reference model's folders (the cache
  folder of the embedded ``world`` models, SmolLM2's converted folder), the edit stage's output files (artefact and
  record), the locate stage's SAE when an attack reads it, the fact file and the held-out text. Paths inside the run
  folder are relative to it (the folder holding ``audit-<label>/``), so a moved run folder still verifies; paths
  outside (the cache) are absolute. Inputs that are not local files (a hub model or fact set) are listed under
  ``unhashed`` with the reason.
- ``config`` (the run config with this one edit) and ``config_sha256``, its canonical JSON's digest;
- ``attacks``: each attack's full settings as the audit built them, and its seed;
- ``verdicts``: per target the verdict and the figures that decide it (audit/verdict.py `TargetVerdict`);
- ``versions``: the package versions (obliviate.results.package_versions).

`obliviate verify` (audit/verify.py) re-checks the hashes and re-runs the audit. The certificate is a record that can
be checked, not a signature: whoever can write the run folder can write a new certificate, and verify's re-run is
what shows whether the verdicts follow from the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from obliviate.config import EditConfig, RunConfig
from obliviate.integrity import SIDECAR_SUFFIX, file_sha256
from obliviate.models import ModelHandle
from obliviate.results import RunDir, atomic_write_json, package_versions, to_jsonable

CERTIFICATE = "certificate.json"
KIND = "obliviate audit certificate"
CERTIFICATE_VERSION = 1
EVIDENCE = ("verdict", "attack", "recovered", "reference", "excess", "margin", "reference_kind", "excess_by_attack",
            "reason")
"""A verdict's deciding figures, as audit/verdict.py `TargetVerdict` names them (`reason` says them in words)."""


def config_sha256(config: Any) -> str:
    """sha256 of the config's canonical JSON (sorted keys, no spaces): equal for a config read back from the file."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted; without hidden files (locks, temp files) and integrity sidecars, which
    are bookkeeping written beside an input, not read as one."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(SIDECAR_SUFFIX))


def hashed(role: str, paths: Iterable[Path], run_root: Path) -> list[dict[str, Any]]:
    """One entry per file: paths inside the run folder relative to it, others absolute."""
    root = run_root.resolve()
    entries = []
    for path in paths:
        path = Path(path).resolve()
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        entries.append({"role": role, "path": str(shown), "sha256": file_sha256(path), "size": path.stat().st_size})
    return entries


def model_inputs(role: str, handle: ModelHandle, run_root: Path) -> tuple[list[dict], list[dict]]:
    """(hashed files, unhashed notes) of a loaded model: the files of its local folder."""
    if handle.hf_dir is None:
        return [], [{"role": role, "source": handle.name, "why": "loaded from the hub, not from local files"}]
    return hashed(f"{role} ({handle.name})", folder_files(handle.hf_dir), run_root), []


def run_inputs(config: RunConfig, edit: EditConfig, run_dir: RunDir) -> list[dict[str, Any]]:
    """The run folder's files the audit read: the edit stage's record and outputs, and locate's SAE if used."""
    from audit.stage import needs_locate
    from edit.stage import stage_name as edit_stage

    stage = edit_stage(edit)
    record = run_dir.record_path(stage)
    files = hashed("edit record", [record] if record.is_file() else [], run_dir.root)
    files += hashed("edit artefact", folder_files(run_dir.root / stage), run_dir.root)
    if needs_locate(config):
        from locate.stage import SAE_DIR, STAGE

        files += hashed("locate SAE", folder_files(run_dir.root / STAGE / SAE_DIR), run_dir.root)
    return files


def data_inputs(config: RunConfig, run_root: Path) -> tuple[list[dict], list[dict]]:
    """(hashed, unhashed) fact file and held-out text."""
    from audit.collateral import heldout_path
    from obliviate.targets import fact_source_path

    facts = Path(fact_source_path(config.facts, seed=config.seed)).expanduser()
    files = hashed("held-out text", [heldout_path(config.seed)], run_root)
    if facts.is_file():
        return hashed("facts", [facts], run_root) + files, []
    return files, [{"role": "facts", "source": config.facts, "why": "a hub dataset, not a local file"}]


def attack_settings(config: RunConfig) -> list[dict[str, Any]]:
    """Each attack as the audit built it: its full config (defaults filled in) and its seed (None if it has none)."""
    from audit.stage import attack_config

    attacks = []
    for i, (name, params) in enumerate(config.audit.attack_choices()):
        settings = to_jsonable(attack_config(config, name, params, where=f"audit.attacks[{i}]"))
        attacks.append({"name": name, "settings": settings, "seed": settings.get("seed")})
    return attacks


def target_verdicts(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target of the audit record: who it is, the verdict and its evidence."""
    return [{"case_id": t["case_id"], "subject": t.get("subject"), "target_true": t.get("target_true"),
             **{key: t.get(key) for key in EVIDENCE}} for t in to_jsonable(list(targets))]


def build_certificate(config: RunConfig, edit: EditConfig, run_dir: RunDir, targets: Sequence[dict[str, Any]], *,
                      base: ModelHandle, oracle: ModelHandle | None,
                      peers: Sequence[ModelHandle] = ()) -> dict[str, Any]:
    """The certificate of one audit (see the module docstring); `targets` are the audit record's targets."""
    from audit.stage import stage_name

    certified_config = to_jsonable(dataclasses.replace(config, edits=[edit]))
    files, unhashed = model_inputs("base model", base, run_dir.root)
    if oracle is not None:
        more, notes = model_inputs("reference model", oracle, run_dir.root)
        files, unhashed = files + more, unhashed + notes
    for peer in peers:
        more, notes = model_inputs("peer model", peer, run_dir.root)
        files, unhashed = files + more, unhashed + notes
    files += run_inputs(config, edit, run_dir)
    more, notes = data_inputs(config, run_dir.root)
    verdicts = target_verdicts(targets)
    counts: dict[str, int] = {}
    for row in verdicts:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return {"kind": KIND, "version": CERTIFICATE_VERSION, "stage": stage_name(edit), "edit": edit.label,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_dir": str(run_dir.root.resolve()),
            "config": certified_config, "config_sha256": config_sha256(certified_config),
            "files": files + more, "unhashed": unhashed + notes, "attacks": attack_settings(config),
            "verdict_counts": counts, "verdicts": verdicts, "versions": package_versions()}


def write_certificate(config: RunConfig, edit: EditConfig, run_dir: RunDir, targets: Sequence[dict[str, Any]], *,
                      base: ModelHandle, oracle: ModelHandle | None, peers: Sequence[ModelHandle] = ()) -> Path:
    """Write ``<run>/audit-<label>/certificate.json`` atomically; returns its path."""
    from audit.stage import stage_name

    path = run_dir.artefact_dir(stage_name(edit)) / CERTIFICATE
    atomic_write_json(path, build_certificate(config, edit, run_dir, targets, base=base, oracle=oracle,
                                                 peers=peers))
    return path
