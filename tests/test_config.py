"""Configs: YAML validated strictly into dataclasses; every shipped config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from obliviate.config import ConfigError, RunConfig, load_yaml

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'locate.noise_multiplyer'"):
        load_yaml(RunConfig, _write(tmp_path, "locate:\n  noise_multiplyer: 3\n"))
    with pytest.raises(ConfigError, match="unknown key 'edits\\[0\\].lambda'|unknown key 'edits"):
        load_yaml(RunConfig, _write(tmp_path, "edits:\n  - {method: memit, lambda: 3}\n"))


def test_wrong_types_and_choices_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="'seed'.*expected int"):
        load_yaml(RunConfig, _write(tmp_path, "seed: abc\n"))
    with pytest.raises(ConfigError, match=r"'edits\[0\].method'.*unknown method 'romee'"):
        load_yaml(RunConfig, _write(tmp_path, "edits: [{method: romee}]\n"))
    with pytest.raises(ConfigError, match="locate.backend"):
        load_yaml(RunConfig, _write(tmp_path, "locate: {backend: pyvene}\n"))
    with pytest.raises(ConfigError, match="share the name"):
        load_yaml(RunConfig, _write(tmp_path, "edits: [{method: rome}, {method: rome}]\n"))


def test_values_land_in_nested_dataclasses(tmp_path):
    config = load_yaml(RunConfig, _write(tmp_path, "seed: 7\nlocate: {n_noise_samples: 3, noise_multiplier: 2}\n"
                                                   "edits: [{method: rome, goal: rewrite, layers: [1, 2]}]\n"))
    assert config.seed == 7 and config.locate.n_noise_samples == 3 and config.locate.noise_multiplier == 2.0
    assert config.edits[0].layers == [1, 2] and config.edits[0].goal == "rewrite"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    assert isinstance(load_yaml(RunConfig, path), RunConfig)
