"""One run at a time per folder: a second run refuses naming the pid; a dead run's lock is taken over;
an artefact is replaced as a whole folder."""

from __future__ import annotations

import os

import pytest
import torch

from obliviate.artefacts import MANIFEST, save_artefact
from obliviate.cli import main
from obliviate.results import LOCK_FILE, RunDir, RunLockedError


def test_a_second_run_in_a_locked_folder_refuses_naming_the_pid(tmp_path):
    with RunDir(tmp_path).lock():
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError, match=f"in use by pid {os.getpid()}"):
            with RunDir(tmp_path).lock():
                pass
    with RunDir(tmp_path).lock():  # released at the end of the first run
        pass


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, capsys):
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # what kill -9 leaves: a pid, and no flock held
    with RunDir(tmp_path).lock():
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert "taking over the lock of pid 999999999" in capsys.readouterr().out


def test_the_cli_refuses_a_busy_folder_with_one_line(tmp_path, monkeypatch, capsys):
    import obliviate.preflight

    monkeypatch.setattr(obliviate.preflight, "check_run", lambda config: [])
    with RunDir(tmp_path / "run").lock():
        assert main(["locate", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists(), "the refused run must not touch the folder"


def test_an_artefact_is_replaced_as_a_whole_folder(tmp_path, monkeypatch):
    folder = tmp_path / "artefact"
    save_artefact(folder, method="memit", base_model="world", base_model_hash="0" * 64,
                  changed={"w": torch.ones(2)})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import obliviate.artefacts

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(obliviate.artefacts, "atomic_write_json", crash)  # dies before the new manifest
    with pytest.raises(OSError):
        save_artefact(folder, method="rome", base_model="world", base_model_hash="1" * 64,
                      changed={"w": torch.zeros(2)})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "the old artefact must stay whole"
    assert (folder / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefact"], "no temp folder left behind"
