"""Result files: atomic writes leave no partial file; stage records round-trip; done-detection."""

from __future__ import annotations

import json
import math

import pytest
import torch

from obliviate import results
from obliviate.results import RunDir, StageRecord


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "locate.json"
    results.atomic_write_json(target, {"ok": 1})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", explode)
    with pytest.raises(OSError):
        results.atomic_write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["locate.json"], "temp file left behind"


def test_stage_record_round_trip_and_done_detection(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_done("locate")
    record = StageRecord(stage="locate", config={"seed": 3}, metrics={"acc": 0.5, "nan": math.nan},
                         targets=[{"case_id": 1, "curve": torch.tensor([0.1, 0.2])}], seeds={"seed": 3})
    run.write(record)
    assert run.is_done("locate")
    loaded = run.read("locate")
    assert loaded["metrics"] == {"acc": 0.5, "nan": None}
    assert loaded["targets"][0]["curve"] == pytest.approx([0.1, 0.2])
    assert loaded["versions"]["torch"] == torch.__version__
    assert loaded["finished_at"]


def test_half_written_record_is_not_done(tmp_path):
    run = RunDir(tmp_path)
    run.record_path("edit").write_text('{"stage": "edit"')  # as a crash mid-write (non-atomic) would leave it
    assert not run.is_done("edit")


def test_tensors_round_trip_via_safetensors(tmp_path):
    tensors = {"w": torch.randn(3, 4), "ids": torch.arange(5)}
    results.atomic_save_tensors(tmp_path / "t.safetensors", tensors, {"method": "rome"})
    loaded = results.load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["ids"], tensors["ids"])


def test_missing_stage_read_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="obliviate audit"):
        RunDir(tmp_path).read("audit")
