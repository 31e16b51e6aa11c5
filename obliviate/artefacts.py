"""The edited-model artefact: only what an edit changed, never a copy of the base weights.

    <folder>/manifest.json        method, config, base model name + weights hash, targets, wall time, versions
    <folder>/changed.safetensors  changed weights under their Hugging Face names (absent for hook-only edits)
    <folder>/hooks/               saved interventions (obliviate.hooks), absent for weight-only edits

`obliviate.models.load(base, artefact=folder)` applies it in memory. The base files are never written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from obliviate.hooks import Intervention, save_interventions
from obliviate.results import atomic_save_tensors, atomic_write_json, package_versions

MANIFEST = "manifest.json"
CHANGED = "changed.safetensors"
HOOKS = "hooks"


def save_artefact(folder: Path, *, method: str, base_model: str, base_model_hash: str,
                  changed: Mapping[str, torch.Tensor] | None = None,
                  interventions: Sequence[Intervention] = (), config: Mapping[str, Any] | None = None,
                  targets: Sequence[int] = (), wall_time_s: float | None = None,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write an edit artefact as a whole folder: built beside `folder`, then renamed over it.

    A reader (an audit overlapping a re-run edit) sees the old artefact or the new one, never a mix or a folder
    without its manifest; a crash leaves the old one in place.
    """
    from obliviate.world.atomic import atomic_folder

    final = Path(folder)
    with atomic_folder(final) as folder:
        if changed:
            atomic_save_tensors(folder / CHANGED, dict(changed), {"method": method, "base_model_hash": base_model_hash})
        if interventions:
            save_interventions(folder / HOOKS, interventions)
        manifest = {
            "method": method, "base_model": base_model, "base_model_hash": base_model_hash,
            "changed_tensors": CHANGED if changed else None, "hooks_dir": HOOKS if interventions else None,
            "changed_tensor_names": sorted(changed or {}), "n_interventions": len(interventions),
            "config": dict(config or {}), "targets": list(targets), "wall_time_s": wall_time_s,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(), **dict(extra or {}),
        }
        atomic_write_json(folder / MANIFEST, manifest)
    return final
