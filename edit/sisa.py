"""SISA unlearning as an edit: retrain only the shards that held the targets' subjects (exact unlearning).

Bourtoule et al., IEEE S&P 2021, "Machine Unlearning"; reference cleverhans-lab/machine-unlearning. The model is a
SISA aggregate (`obliviate.world.sisa.train_sisa`, loaded by `obliviate.models.load(folder)` as the mean of its
constituents' next-token distributions). A request names facts; SISA forgets by DATA, so every text about the
targets' subjects is removed: the shards that hold them retrain from their last checkpoint before the first slice
holding one (`obliviate.world.sisa.unlearn`), the other shards stay bit for bit as they were.

The unlearned SISA folder is written beside the model (or to `work_dir`); the edit's result carries the retrained
constituents' tensors, named ``constituents.<shard>.<HF name>``, so the edit stage's artefact applies to the
aggregate like any other edit. No strength knob: retraining without the data is the whole method (nothing to
turn); the operating-point search evaluates it at its configuration.

Full-size cost: a constituent trains R × steps_per_slice steps; a request touching k of S shards, each from slice
r_k, retrains Σ (R − r_k) × steps_per_slice steps, against S × R × steps_per_slice for retraining everything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edit.result import EditRequest, EditResult
from obliviate.registry import EDITS, Spec


@dataclass
class SISAUnlearnConfig:
    """Where SISA's retraining writes the unlearned ensemble."""

    work_dir: str | None = None
    """Folder of the unlearned SISA model (rerunning resumes there); None: beside the model, named
    ``<model>.unlearn-<request id>``."""


@EDITS.register("sisa", SISAUnlearnConfig, needs=("sisa_model",), spec=Spec(layers="none", knob=None))
def sisa_method(handle: Any, request: EditRequest, cfg: SISAUnlearnConfig) -> EditResult:
    """SISA: retrain the shards holding the targets' subjects without their texts (the others are untouched)."""
    from safetensors.torch import load_file

    from obliviate.world.sisa import constituent_dirs, request_id, unlearn

    if getattr(handle, "rebuilt", None) is None or handle.hf_dir is None:
        raise ValueError(f"sisa unlearns a SISA model (a folder written by obliviate.world.sisa.train_sisa); "
                         f"{handle.name} is not one.")
    if not request.targets:
        raise ValueError("sisa needs at least one target fact (its subject's texts are removed).")
    start = time.perf_counter()
    subjects = sorted({f.subject for f in request.targets})
    sisa_dir = Path(handle.hf_dir)
    out = Path(cfg.work_dir) if cfg.work_dir else sisa_dir.parent / f"{sisa_dir.name}.unlearn-{request_id(subjects)}"
    record = unlearn(sisa_dir, subjects, out)
    folders = constituent_dirs(out)
    changed = {f"constituents.{shard}.{key}": value for shard in record["retrained_shards"]
               for key, value in load_file(str(folders[shard] / "model.safetensors")).items()}
    return EditResult(method="sisa", changed=changed, targets=[f.case_id for f in request.targets], layers=[],
                      timings={"retrain": time.perf_counter() - start},
                      metrics={**record, "unlearned_model": str(out), "subjects": subjects}, config=asdict(cfg))
