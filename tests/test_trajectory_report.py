"""The audit record carries its edit's operating-point search, so a reader of the audit alone knows whether the
edit it audited reached the operating point. Records are built by hand from a constructed search, no model."""

from __future__ import annotations

from audit.report import audit_metrics
from audit.stage import edit_operating_point
from edit.search import REACHED, Point, search_knob
from obliviate.config import EditConfig
from obliviate.registry import Knob
from obliviate.results import RunDir, StageRecord

LAMBDA = Knob("mom2_per_d_mlp", 0.01, 100.0, stronger="lower")
MEMIT = {**search_knob(LAMBDA, lambda v: Point(v, 0.0 if v <= 1.0 else 1.0, 0.9, 0.0), target=0.2,
                       max_retain_drop=0.5).to_dict(), "oracle_forget_recall": 0.1}


def _edit(method: str, operating_point: dict | None) -> StageRecord:
    metrics = {"method": method} | ({"operating_point": operating_point} if operating_point else {})
    return StageRecord(stage=f"edit-{method}", config={}, metrics=metrics)


def test_audit_stage_copies_the_edits_search_record(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    run_dir.write(_edit("memit", MEMIT))
    run_dir.write(_edit("rome", None))
    assert edit_operating_point(run_dir, EditConfig(method="memit")) == MEMIT
    assert edit_operating_point(run_dir, EditConfig(method="rome")) is None, "edited at its configuration"
    assert edit_operating_point(run_dir, EditConfig(method="pga")) is None, "no edit record: nothing to copy"
    assert audit_metrics("memit", operating_point=MEMIT)["operating_point"]["status"] == REACHED
    assert "operating_point" not in audit_metrics("memit")
