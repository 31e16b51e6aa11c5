"""The attack registry: YAML names or {name, params}, every attack's settings reachable and checked at load time
with the key path; the audit stage and the calibration run attacks through the same registry."""

from __future__ import annotations

import dataclasses

import pytest

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import AttackContext, run_attack
from obliviate.config import ConfigError, RunConfig, from_dict
from obliviate.registry import ATTACKS


def test_every_attack_is_registered_with_a_config_dataclass():
    assert {"keyword", "quantization", "probe", "logit_lens", "relearn", "sae_restore", "uds", "base_lens",
            "tuned_lens", "in_context", "benign_relearn", "heldout_relearn"} <= set(ATTACKS.names())
    for entry in ATTACKS:
        assert dataclasses.is_dataclass(entry.config) and entry.doc


def test_yaml_attacks_take_names_or_name_and_params():
    config = from_dict(RunConfig, {"audit": {"attacks": ["keyword", {"name": "relearn", "params": {"lr": 0.003}},
                                                         {"name": "logit_lens", "params": {"k": 3}}]}})
    choices = dict(config.audit.attack_choices())
    assert choices["keyword"] == {}
    assert choices["relearn"] == {"lr": 0.003, "steps": config.audit.relearn_steps}
    assert choices["logit_lens"] == {"k": 3}
    # every field of every attack's config is reachable: each one given explicitly loads
    for entry in ATTACKS:
        params = {f.name: dataclasses.asdict(entry.params())[f.name] for f in dataclasses.fields(entry.config)}
        loaded = from_dict(RunConfig, {"audit": {"attacks": [{"name": entry.name, "params": params}]}})
        assert loaded.audit.attack_choices()[0][1] == params


@pytest.mark.parametrize(("attacks", "message"), [
    (["keywrd"], r"'audit.attacks\[0\]'.*unknown attack 'keywrd'; registered: .*logit_lens"),
    ([{"name": "relearn", "params": {"stepz": 3}}], r"unknown key 'audit.attacks\[0\].params.stepz'"),
    (["keyword", {"name": "quantization", "params": {"min_gap": "x"}}], r"'audit.attacks\[1\].params.min_gap'"),
    (["probe", "probe"], r"'audit.attacks\[1\]'.*listed twice"),
])
def test_bad_attacks_fail_at_load_time_naming_the_key_path(attacks, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RunConfig, {"audit": {"attacks": attacks}})


def test_an_attack_param_reaches_the_attack():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    entry = ATTACKS.get("logit_lens")
    for k in (1, 3):
        result = run_attack("logit_lens", handle, handle, facts, entry.params({"k": k}), AttackContext())
        assert result.config["k"] == k and result.oracle is None
    with_oracle = run_attack("logit_lens", handle, handle, facts, entry.params({"k": 2}),
                             AttackContext(oracle=handle))
    assert with_oracle.oracle is not None and with_oracle.oracle.recovered == with_oracle.recovered


def test_an_attack_that_needs_an_oracle_refuses_without_one():
    with pytest.raises(ValueError, match="uds needs a never-learned reference"):
        run_attack("uds", None, None, [], None, AttackContext())


def test_the_calibration_runs_registered_attacks_with_their_params():
    from audit.calibrate import attack_runner

    handle = tiny_handle("gpt2")
    result = attack_runner("logit_lens", (), {"k": 2})(handle, handle, tiny_facts())
    assert result.attack == "logit_lens" and result.config["k"] == 2
    with pytest.raises(ConfigError, match="unknown attack 'nope'; registered:"):
        attack_runner("nope")
    with pytest.raises(ValueError, match="sae_restore' needs sae"):
        attack_runner("sae_restore")


def test_an_oracle_with_another_tokenizer_is_an_error_naming_both():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from _locate_tiny import WORDS
    from audit.attack_result import ReferenceMismatchError, check_oracle_tokenizer

    handle = tiny_handle("gpt2")
    check_oracle_tokenizer(handle, dataclasses.replace(handle, name="same-tokenizer"))  # same ids: fine
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(reversed(WORDS))}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="<pad>")
    oracle = dataclasses.replace(handle, name="other-oracle", tokenizer=other)
    with pytest.raises(ReferenceMismatchError, match=r"reference model 'other-oracle'.*audited model 'tiny-gpt2'"):
        check_oracle_tokenizer(handle, oracle)


def test_a_peer_or_reference_is_loaded_only_when_it_reads_text_as_the_audited_model(monkeypatch):
    from audit.attack_result import ReferenceMismatchError, load_alike

    handle = tiny_handle("gpt2")
    other = dataclasses.replace(handle, name="other", prepend_bos=not handle.prepend_bos)
    models = {"same": dataclasses.replace(handle, name="same"), "other": other}
    monkeypatch.setattr("obliviate.models.load", lambda name, device="cpu": models[name])
    assert load_alike("same", handle).name == "same"
    with pytest.raises(ReferenceMismatchError, match="'other'"):
        load_alike("other", handle)
