"""Cached files are checked against the sha256 recorded when they were built, once per process."""

from __future__ import annotations

import pytest

from obliviate import integrity
from obliviate.integrity import CacheIntegrityError, seal, sidecar_of, verify


def test_same_size_garbage_is_caught_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"real weights")
    seal(path)
    verify(path, rebuild="`make it`")
    path.write_bytes(b"x" * len(b"real weights"))
    with pytest.raises(CacheIntegrityError, match=f"{path}.*corrupted.*rebuild it with `make it`"):
        verify(path, rebuild="`make it`")


def test_a_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "stats.safetensors"
    path.write_bytes(b"moments")
    sidecar_of(path).write_text('{"sha256": "%s"}' % integrity.file_sha256(path))
    calls = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        verify(path, rebuild="x")
    assert len(calls) == 1


def test_a_file_without_a_sidecar_is_recorded_on_first_use(tmp_path):
    path = tmp_path / "old.safetensors"
    path.write_bytes(b"built before sidecars")
    verify(path, rebuild="x")
    assert sidecar_of(path).is_file()
    path.write_bytes(b"built before sidecarz")
    with pytest.raises(CacheIntegrityError):
        verify(path, rebuild="x")


def test_missing_file_and_unreadable_sidecar_are_errors(tmp_path):
    with pytest.raises(CacheIntegrityError, match="missing"):
        verify(tmp_path / "absent.safetensors", rebuild="x")
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"a")
    sidecar_of(path).write_text("not json")
    with pytest.raises(CacheIntegrityError, match="unreadable"):
        verify(path, rebuild="x")


def test_a_corrupted_run_sae_is_refused_before_sae_lens_reads_it(tmp_path):
    from locate.stage import SAE_DIR, STAGE, load_run_sae
    from obliviate.results import RunDir

    weights = tmp_path / STAGE / SAE_DIR / "sae_weights.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"trained sae")
    seal(weights)
    weights.write_bytes(b"garbage sae")
    with pytest.raises(CacheIntegrityError, match="sae_weights.safetensors.*obliviate locate --force"):
        load_run_sae(RunDir(tmp_path))
