"""Configs: YAML validated strictly into dataclasses; every shipped config loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
                                                   "edits: [{method: memit, goal: rewrite, layers: [1, 2]}]\n"))
    assert config.seed == 7 and config.locate.n_noise_samples == 3 and config.locate.noise_multiplier == 2.0
    assert config.edits[0].layers == [1, 2] and config.edits[0].goal == "rewrite"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    assert isinstance(load_yaml(RunConfig, path), RunConfig)


@pytest.mark.parametrize(("text", "path"), [
    ("limit: -1\n", "'limit'"), ("limit: 0\n", "'limit'"),
    ("locate: {max_targets: -1}\n", "'locate.max_targets'"), ("locate: {window: -2}\n", "'locate.window'"),
    ("locate: {noise_multiplier: -3.0}\n", "'locate.noise_multiplier'"),
    ("locate: {noise_multiplier: .nan}\n", "'locate.noise_multiplier'"),
    ("audit: {relearn_steps: -5}\n", "'audit.relearn_steps'"), ("audit: {margin: -0.1}\n", "'audit.margin'"),
    ("audit: {margin: 1.5}\n", "'audit.margin'"), ("device: quantum\n", "'device'"), ("seed: -1\n", "'seed'"),
    ("edits: [{method: rome, layers: [-1]}]\n", r"'edits\[0\].layers\[0\]'"),
    ("edits: [{method: rome, layers: []}]\n", r"'edits\[0\].layers'"),
    ("audit: {reference: null, peers: [world-retain-2]}\n", "'audit.peers'"),
    ("audit: {without_reference: decoy}\n", "'audit.without_reference'"),
    ("audit: {reference: null, without_reference: counterfactual}\n", "'audit.without_reference'"),
    ("audit: {reference: null, relearn_check_steps: 6}\n", "'audit.relearn_check_steps'"),
    ("audit: {reference: null, null_draws: 0}\n", "'audit.null_draws'"),
    ("locate: {unknown_names: []}\n", "'locate.unknown_names'"),
    ("audit: {relearn_check_steps: -1}\n", "'audit.relearn_check_steps'"),
    ("audit: {peers: [world-retain]}\n", r"'audit.peers\[0\]'"),
])
def test_out_of_range_values_are_errors_naming_the_key_path(tmp_path, text, path):
    with pytest.raises(ConfigError, match=path):
        load_yaml(RunConfig, _write(tmp_path, text))


def test_valid_devices_and_bounds_load(tmp_path):
    config = load_yaml(RunConfig, _write(tmp_path, "device: cuda:1\nlimit: 1\nlocate: {max_targets: null}\n"
                                                   "audit: {margin: 0.0, relearn_steps: 1}\n"))
    assert config.device == "cuda:1" and config.limit == 1 and config.locate.max_targets is None


def test_non_utf8_config_and_non_string_keys_are_config_errors(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("model: w\xf6rld\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(RunConfig, path)
    with pytest.raises(ConfigError, match="unknown key '1'"):
        load_yaml(RunConfig, _write(tmp_path, "1: 2\nmodel: world\nnull: 3\n"))


@dataclass
class _Choices:
    mode: Literal["a", "b"] = "a"
    maybe: Literal["x"] | None = None
    free: str = "anything"


def test_a_config_built_in_code_gets_the_loaders_check_of_its_choices():
    from obliviate.config.loader import InvalidField, check_choices

    check_choices(_Choices(mode="b", maybe="x", free="z"))
    check_choices(_Choices())  # None is a choice of an optional Literal
    with pytest.raises(InvalidField, match=r"'mode'.*'c' is not one of \['a', 'b'\]"):
        check_choices(_Choices(mode="c"))
    with pytest.raises(InvalidField, match=r"'maybe'.*'y' is not one of \['x'\]"):
        check_choices(_Choices(maybe="y"))


def test_rome_and_the_memit_family_share_the_value_optimisation_settings():
    """One declaration of the v* / z settings (edit.value_opt.ValueOptConfig): MEMIT gets ROME's plateau rule, keeps
    its own clamp, and both hand their settings to optimise_values, checked the same way."""
    from edit.alphaedit import AlphaEditConfig
    from edit.memit import MemitConfig
    from edit.rome import RomeConfig
    from obliviate.config import from_dict

    assert RomeConfig().clamp_norm_factor == 4.0 and MemitConfig().clamp_norm_factor == 0.75
    for config in (RomeConfig, MemitConfig, AlphaEditConfig):
        settings = from_dict(config, {"plateau_tol": 0.01, "steps": 7}).settings()
        assert settings.plateau_tol == 0.01 and settings.steps == 7
        with pytest.raises(ConfigError, match="params.plateau_tol"):
            from_dict(config, {"plateau_tol": 2.0}, where="params")
    memit = MemitConfig(facts_per_batch=4, one_z_per_subject=True).settings()
    assert memit.facts_per_batch == 4 and memit.tie_subjects
    assert RomeConfig().settings().facts_per_batch == 16  # ROME edits one fact: the internal default
