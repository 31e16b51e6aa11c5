"""Fact-set loading: both formats, and every malformed record fails with its index and field."""

from __future__ import annotations

import json

import pytest

from obliviate.facts import Fact, FactSetError, facts_from_records, load_facts, save_facts


def _record(**rewrite_overrides):
    rewrite = {"prompt": "{} was born in the city of", "subject": "Vorlak Danthe",
               "target_true": {"str": "Quillmar"}, "target_new": {"str": "Ostrava"}, "relation_id": "birth_city"}
    rewrite.update(rewrite_overrides)
    return {"case_id": 0, "requested_rewrite": rewrite, "paraphrase_prompts": ["Vorlak Danthe's birthplace is"],
            "neighborhood_prompts": ["Mira Sol was born in the city of"], "generation_prompts": [], "split": "forget"}


def test_counterfact_record_round_trips(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(_record()) + "\n")
    (fact,) = load_facts(path)
    assert fact.text == "Vorlak Danthe was born in the city of"
    assert fact.text[slice(*fact.subject_span)] == "Vorlak Danthe"
    assert fact.split == "forget" and fact.relation_id == "birth_city"
    save_facts([fact], tmp_path / "again.jsonl")
    assert load_facts(tmp_path / "again.jsonl") == [fact]


def test_tracing_format_derives_the_template():
    row = {"prompt": "The Eiffel Tower is located in", "subject": "The Eiffel Tower", "target_true": " Paris",
           "target_false": " Rome", "relation_id": "P276"}
    (fact,) = facts_from_records([row])
    assert fact.prompt == "{} is located in" and fact.target_true == "Paris" and fact.target_new == "Rome"


def test_subject_missing_from_prompt_is_an_error_not_a_skip():
    row = {"prompt": "The tower is located in", "subject": "Eiffel Tower", "target_true": "Paris",
           "target_false": "Rome"}
    with pytest.raises(FactSetError, match=r"record 0.*'Eiffel Tower' not found"):
        facts_from_records([row])


@pytest.mark.parametrize(("override", "field"), [
    ({"prompt": "no placeholder here"}, "requested_rewrite.prompt"),
    ({"prompt": "{} and {}"}, "requested_rewrite.prompt"),
    ({"target_true": {"str": " Quillmar"}}, "requested_rewrite.target_true.str"),
    ({"target_new": {"str": "Quillmar"}}, "target_new equals target_true"),
    ({"subject": 3}, "requested_rewrite.subject"),
])
def test_bad_record_names_index_and_field(override, field):
    good = _record()
    bad = _record(**override)
    bad["case_id"] = 1
    with pytest.raises(FactSetError) as caught:
        facts_from_records([good, bad])
    assert "record 1" in str(caught.value) and field in str(caught.value)


def test_missing_rewrite_and_bad_split_and_duplicate_ids():
    with pytest.raises(FactSetError, match="record 0: missing field 'requested_rewrite'"):
        facts_from_records([{"case_id": 0}])
    bad_split = _record()
    bad_split["split"] = "train"
    with pytest.raises(FactSetError, match="'split'"):
        facts_from_records([bad_split])
    with pytest.raises(FactSetError, match="case_id 0 occurs more than once"):
        facts_from_records([_record(), _record()])


def test_malformed_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_record()) + "\n{not json\n")
    with pytest.raises(FactSetError, match="line 2"):
        load_facts(path)


def test_split_filter_and_limit(tmp_path):
    records = []
    for i in range(6):
        record = _record(subject=f"Subject{i}")
        record["case_id"], record["split"] = i, "forget" if i % 2 else "retain"
        records.append(record)
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [f.case_id for f in load_facts(path, split="forget")] == [1, 3, 5]
    assert len(load_facts(path, limit=2)) == 2


def test_unknown_source_offline_fails_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FactSetError, match="local .jsonl"):
        load_facts("nobody/no-such-fact-set")


def test_fact_is_hashable_and_frozen():
    fact = facts_from_records([_record()])[0]
    assert isinstance(fact, Fact) and hash(fact) == hash(facts_from_records([_record()])[0])
    with pytest.raises(AttributeError):
        fact.subject = "x"  # type: ignore[misc]


def test_bool_case_id_is_an_error_not_the_id_one():
    record = _record()
    record["case_id"] = True
    with pytest.raises(FactSetError, match="record 0: 'case_id' must be an integer"):
        facts_from_records([record])


def test_prompt_with_a_stray_brace_is_an_error_naming_the_record():
    with pytest.raises(FactSetError, match=r"record 0.*brace"):
        facts_from_records([_record(prompt="{} lives at {0}")])


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_empty_fact_file_is_an_error(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("[]" if suffix == ".json" else "\n")
    with pytest.raises(FactSetError, match="holds no fact records"):
        load_facts(path)


def test_a_split_with_no_facts_and_a_bad_limit_are_errors(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(_record()) + "\n")
    with pytest.raises(FactSetError, match="no facts of split 'retain'.*forget"):
        load_facts(path, split="retain")
    with pytest.raises(FactSetError, match="limit -1 must be ≥ 1"):
        load_facts(path, limit=-1)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_invalid_json_and_non_utf8_files_raise_fact_set_errors(tmp_path, suffix):
    broken = tmp_path / f"broken{suffix}"
    broken.write_text("{not json")
    with pytest.raises(FactSetError, match="not valid JSON"):
        load_facts(broken)
    latin = tmp_path / f"latin{suffix}"
    latin.write_bytes(json.dumps([_record()] if suffix == ".json" else _record()).replace("Vorlak", "V\xf6rlak")
                      .encode("latin-1"))
    with pytest.raises(FactSetError, match="not UTF-8"):
        load_facts(latin)
