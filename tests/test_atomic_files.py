"""Files the workbench writes: the user's umask (as open() would), atomic figures and sidecars, identical bytes."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from obliviate import results


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask_022):
    results.atomic_write_json(tmp_path / "r.json", {"ok": 1})
    results.atomic_save_tensors(tmp_path / "t.safetensors", {"w": torch.ones(2)})
    assert _mode(tmp_path / "r.json") == 0o644 and _mode(tmp_path / "t.safetensors") == 0o644
    os.umask(0o077)
    results.atomic_write_text(tmp_path / "private.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_safetensors_bytes_do_not_depend_on_metadata_order(tmp_path):
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    blobs = set()
    for i in range(12):
        keys = ["method", "base_model_hash", "goal", "layers"]
        metadata = {k: f"value-{k}" for k in (keys if i % 2 else reversed(keys))}
        results.atomic_save_tensors(tmp_path / f"t{i}.safetensors", tensors, metadata)
        blobs.add((tmp_path / f"t{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "t0.safetensors"), "pt") as handle:
        assert handle.metadata() == {k: f"value-{k}" for k in keys}
    loaded = results.load_tensors(tmp_path / "t0.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


@pytest.fixture
def failing_rename(monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", explode)


def test_representation_figure_goes_through_the_atomic_writer(tmp_path, failing_rename):
    from audit.representation import RepresentationComparison, plot_representation

    comparison = RepresentationComparison(depths=[0, 1], probe_base=[0.5, 0.9], probe_edited=[0.5, 0.4], chance=0.3,
                                          cka_targets=[1.0, 0.8], cka_retain=[1.0, 0.99],
                                          n_targets_probed=2, n_cka_targets=2, n_cka_retain=2)
    with pytest.raises(OSError, match="disk full"):
        plot_representation(comparison, tmp_path / "representation.png")
    assert list(tmp_path.iterdir()) == [], "a failed save must leave no partial figure"


def test_report_figure_goes_through_the_atomic_writer(tmp_path, failing_rename):
    from audit.report import plot_verdicts

    rows = [{"run": "r", "method": "memit", "label": "memit", "erased": 3, "suppressed": 1, "intact": 0}]
    with pytest.raises(OSError, match="disk full"):
        plot_verdicts(rows, tmp_path / "verdicts.png")
    assert list(tmp_path.iterdir()) == []


def test_trajectory_figures_go_through_the_atomic_writer(tmp_path, failing_rename):
    from audit.trajectory import plot_overlay, plot_trajectory

    point = {"value": 1.0, "forget_recall": 0.1, "retain_recall": 0.9, "retain_drop": 0.0, "perplexity": 1.1,
             "extra": {}}
    found = {"status": "reached", "knob": {"field": "lr", "scale": "log", "stronger": "higher"},
             "chosen": point, "points": [point], "target_forget_recall": 0.2}
    with pytest.raises(OSError, match="disk full"):
        plot_trajectory(found, "m", tmp_path / "trajectory.png")
    with pytest.raises(OSError, match="disk full"):
        plot_overlay([("m", found)], tmp_path / "trajectories.png")
    assert list(tmp_path.iterdir()) == []


def test_weights_hash_sidecar_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    from obliviate.models import weights_file_hash

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(results.os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        weights_file_hash(tmp_path / "model")
    assert not list((tmp_path / "cache").rglob("*.txt")), "no sidecar unless written whole"
