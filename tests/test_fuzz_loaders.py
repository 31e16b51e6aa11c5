"""Fuzz the two loaders users feed by hand: any document or record set gives a valid result or the project's error.

A valid result must also hold what the rest of the code assumes (a config rebuilds to itself; a fact's subject sits
at its span and the fact round-trips through save_facts), so "no exception" is not mistaken for "correct".
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obliviate.config import AuditConfig, ConfigError, EditConfig, LocateConfig, RunConfig, from_dict, load_yaml
from obliviate.facts import FactSetError, load_facts, save_facts

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_words = st.sampled_from(["world", "cpu", "cuda", "quantum", "forget", "retain", "rome", "memit", "keyword",
                          "logit_lens", "trace", "noise", "replace", "resid", "mlp", "", "{}", "null"])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.floats(), _words,
                  st.text(max_size=12))
_junk = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.one_of(st.text(max_size=6), st.integers(), st.booleans()), inner, max_size=4), max_leaves=10)


def _fields_of(cls, nested):
    """A mapping with some of `cls`'s field names (nested where given), sometimes a stray key."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {name: nested.get(name, _junk) for name in names}
    return st.fixed_dictionaries({}, optional={**values, "stray": _junk})


_edit = _fields_of(EditConfig, {"method": _words, "layers": st.one_of(st.none(), st.lists(st.integers(-2, 6))),
                                "params": st.dictionaries(st.text(max_size=5), _leaf, max_size=2)})
_document = _fields_of(RunConfig, {
    "locate": _fields_of(LocateConfig, {"methods": st.lists(_words, max_size=3)}) | _junk,
    "audit": _fields_of(AuditConfig, {"attacks": st.lists(_words, max_size=3)}) | _junk,
    "edits": st.lists(_edit, max_size=3) | _junk,
})


@FUZZ
@given(document=_document | _junk, raw=st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40)))
def test_yaml_loader_gives_a_config_or_a_config_error(document, raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        if raw is None:
            path.write_text(yaml.safe_dump(document))
        else:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        try:
            config = load_yaml(RunConfig, path)
        except ConfigError:
            return
    assert isinstance(config, RunConfig)
    assert from_dict(RunConfig, dataclasses.asdict(config)) == config


_text = st.one_of(_words, st.text(max_size=10), st.sampled_from(["Vorlak", "Quillmar", "Ostrava", " Pad "]))
_prompt = st.one_of(st.sampled_from(["{} was born in", "{} {}", "no slot", "{x} {}", "{0}{}", "{{}}", "}{}"]),
                    _text)
_target = st.one_of(_text, st.fixed_dictionaries({"str": _text}), _junk)
_rewrite = st.fixed_dictionaries({}, optional={"prompt": _prompt, "subject": _text, "target_true": _target,
                                               "target_new": _target, "relation_id": _leaf})
_record = st.fixed_dictionaries({}, optional={
    "case_id": st.one_of(st.integers(0, 4), st.booleans(), _leaf), "requested_rewrite": _rewrite | _junk,
    "split": st.one_of(st.sampled_from(["forget", "retain"]), _leaf),
    "paraphrase_prompts": st.lists(_text, max_size=2) | _junk, "neighborhood_prompts": st.lists(_text, max_size=2),
    # the tracing format's flat row
    "prompt": _text, "subject": _text, "target_true": _text, "target_false": _text,
}) | _junk


@FUZZ
@given(records=st.lists(_record, max_size=4), suffix=st.sampled_from([".json", ".jsonl"]),
       raw=st.one_of(st.none(), st.binary(max_size=40)), split=st.sampled_from([None, "forget", "retain"]))
def test_fact_loader_gives_facts_or_a_fact_set_error(records, suffix, raw, split):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"facts{suffix}"
        if raw is not None:
            path.write_bytes(raw)
        elif suffix == ".json":
            path.write_text(json.dumps(records))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        try:
            facts = load_facts(path, split=split)
        except FactSetError:
            return
        assert facts and all(split is None or f.split == split for f in facts)
        for fact in facts:
            assert fact.text[slice(*fact.subject_span)] == fact.subject
        save_facts(facts, Path(folder) / "again.jsonl")
        assert load_facts(Path(folder) / "again.jsonl", split=split) == facts
