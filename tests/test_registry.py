"""The edit registry: every registered method runs through the one interface on a tiny model; requests a method
cannot honour are refused naming the method; names and params are checked when the YAML is loaded."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.result import EditRequest, EditResult, run_method
from obliviate.config import ConfigError, RunConfig, from_dict
from obliviate.registry import EDITS, Knob


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """Small settings for the slow parts of some methods; a method without an entry runs at its defaults."""
    corpus = tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")
    cov = {"corpus": str(corpus), "n_tokens": 600, "seq_len": 24, "cache": False}
    short = {"steps": 2, "batch_size": 4}
    return {"rome": {"steps": 3, "context_lengths": [[3, 1]], "covariance": cov},
            "memit": {"steps": 3, "context_lengths": [[3, 1]], "covariance": cov},
            "alphaedit": {"steps": 3, "context_lengths": [[3, 1]], "covariance": cov},
            "graddiff": short, "npo": short, "simnpo": short, "rmu": short, "dpo": short,
            "idkdpo": {**short, "idk_answers": ["unknown"]},  # the tiny vocabulary spells no longer refusal
            "task_vector": short, "salun": short, "counterexample_ft": short,
            "ssd": {"alpha": 1.0},  # three random facts: the reference's α = 10 may select no weight
            "pga": {"variant": "probe", "max_iter": 200}}


def _secrets(n: int = 6):
    from locate.memorisation_probe import Secret

    words = ["Paris", "London", "Rome", "Eiffel", "Tower", "Colosseum"]
    return [Secret(key_id=i, memorised=f"The {words[i]} is in the city of {words[(i + 1) % 6]}",
                   control=f"The river near the {words[i]} was old", control_b=f"Many people built {words[i]}")
            for i in range(n)]


def test_every_registered_method_runs_through_the_one_interface(handle, fast):
    facts = tiny_facts()
    names = EDITS.names()
    assert {"rome", "memit", "graddiff", "npo", "simnpo", "rmu", "steering", "pga", "leace", "suppress",
            "none", "task_vector", "ssd", "salun", "counterexample_ft"} <= set(names)
    weights = {n: p.detach().clone() for n, p in handle.hf.named_parameters()}
    for entry in EDITS:
        if entry.needs:  # a method that needs a special base (an adapted model, a SISA ensemble) has its own tests
            continue
        cfg = entry.params(fast.get(entry.name, {}), where=f"{entry.name}.params")
        request = EditRequest(targets=facts[:2], retain=facts[2:], seed=0, secrets=_secrets())
        result = run_method(entry.name, handle, request, cfg)
        assert isinstance(result, EditResult) and result.method == entry.name
        if entry.name != "none":
            assert result.changed or result.interventions, entry.name
        # −1 is the embedding (depth 0) of the depth-indexed methods (PGA, LEACE)
        assert all(-1 <= layer < handle.n_layers for layer in result.layers), (entry.name, result.layers)
    # no method wrote the model it was given
    assert all(torch.equal(p, weights[n]) for n, p in handle.hf.named_parameters())


@pytest.mark.parametrize(("name", "layers"), [("rome", [1]), ("steering", [2]), ("rmu", [1]), ("graddiff", [0]),
                                              ("leace", [0, 2]), ("memit", [1, 2]), ("alphaedit", [1, 2]),
                                              ("task_vector", [1]),
                                              ("ssd", [2]), ("salun", [0]), ("counterexample_ft", [1, 2])])
def test_explicit_layers_are_the_layers_the_edit_acts_on(handle, fast, name, layers):
    cfg = EDITS.get(name).params(fast.get(name, {}))
    facts = tiny_facts()
    result = run_method(name, handle, EditRequest(targets=facts[:2], retain=facts[2:], layers=layers), cfg)
    if name == "rmu":  # RMU trains the n_update_layers blocks ending at L
        assert result.metrics["layer"] == layers[-1]
    elif name in ("graddiff", "task_vector", "ssd", "salun", "counterexample_ft"):
        assert result.layers == layers  # only those blocks' weights moved
    else:
        assert result.layers == layers


def test_a_request_a_method_cannot_honour_is_refused_naming_it(handle):
    facts = tiny_facts()
    with pytest.raises(ValueError, match="graddiff supports goal erase"):
        run_method("graddiff", handle, EditRequest(targets=facts, goal="rewrite"))
    with pytest.raises(ValueError, match="suppress has no layer"):
        run_method("suppress", handle, EditRequest(targets=facts, layers=[1]))
    with pytest.raises(ValueError, match="rome edits exactly one layer"):
        run_method("rome", handle, EditRequest(targets=facts, layers=[0, 1]))
    with pytest.raises(ValueError, match="memit edits a contiguous range"):
        run_method("memit", handle, EditRequest(targets=facts, layers=[0, 2]))


def test_the_yaml_checks_names_goals_layers_and_params_at_load_time_with_the_key_path():
    with pytest.raises(ConfigError, match=r"'edits\[0\].method'.*registered: .*memit.*npo"):
        from_dict(RunConfig, {"edits": [{"method": "romee"}]})
    with pytest.raises(ConfigError, match=r"'edits\[0\].goal'.*npo supports goal erase"):
        from_dict(RunConfig, {"edits": [{"method": "npo", "goal": "rewrite"}]})
    with pytest.raises(ConfigError, match=r"'edits\[0\].layers'.*suppress has no layer"):
        from_dict(RunConfig, {"edits": [{"method": "suppress", "layers": [1]}]})
    with pytest.raises(ConfigError, match=r"unknown key 'edits\[1\].params.lamda'"):
        from_dict(RunConfig, {"edits": [{"method": "memit"}, {"method": "rome", "params": {"lamda": 1}}]})
    with pytest.raises(ConfigError, match=r"'edits\[0\].params.beta'"):
        from_dict(RunConfig, {"edits": [{"method": "npo", "params": {"beta": -1.0}}]})


def test_the_cli_help_of_a_method_is_its_config_docstrings():
    entry = EDITS.get("simnpo")
    assert entry.params().beta == 4.5 and entry.params().gamma == 0.125
    assert EDITS.get("npo").params().beta == 0.1
    with pytest.raises(ConfigError, match="unknown edit method 'nope'; registered: "):
        EDITS.get("nope")


@pytest.mark.parametrize(("low", "high", "message"), [
    (1.0, 1.0, "empty"), (2.0, 1.0, "reversed"), ("a", 1.0, "not a finite number"), (-1.0, 1.0, "log scale"),
    (float("nan"), 1.0, "not a finite number")])
def test_a_knob_range_that_cannot_be_searched_is_an_error_naming_the_key(low, high, message):
    with pytest.raises(ConfigError, match=rf"'edits\[0\].knob_range'.*{message}"):
        Knob("lr", 1e-5, 1e-2).check_range(low, high, "edits[0].knob_range")


def test_every_knob_names_a_field_and_a_searchable_default_range():
    for entry in EDITS:
        knob = entry.spec.knob
        if knob is None:
            continue
        low, high = knob.check_range(knob.low, knob.high, entry.name)
        weak, strong = knob.ends(low, high)
        cfg = knob.apply(entry.params(), strong)
        assert getattr(cfg, knob.field) == knob.value(strong)
