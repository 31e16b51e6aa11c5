"""bench/bench_edit.py reports every CounterFact figure beside its pre-edit value, same-relation neighbours apart."""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_edit.py"
_SPEC = importlib.util.spec_from_file_location("bench_edit", _PATH)
bench_edit = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_edit)

NAN = float("nan")


def _figures(**values) -> dict[str, float]:
    return {name: values.get(name, NAN) for name in bench_edit.FIGURES}


def _row(base: dict, edited: dict) -> dict:
    return {"counterfact_base": base, "counterfact": edited, "top1_new": True, "edit_s": 1.0, "optimise_s": 0.5,
            "steps": 10}


def test_each_figure_is_printed_after_its_pre_edit_value_and_absent_kinds_are_left_out():
    base = _figures(es=0.0, ps=20.0, ns=100.0, s=0.0, em=-90.0, pm=-60.0, nm=80.0)
    edited = _figures(es=100.0, ps=60.0, ns=50.0, s=66.7, em=70.0, pm=10.0, nm=5.0)
    line = bench_edit.before_after(base, edited)
    assert line == "ES 0→100 PS 20→60 NS 100→50 S 0→67 EM -90→70 PM -60→10 NM 80→5"
    assert "same-rel" not in line, "a fact without same-relation neighbours has no such figure to print"


def test_same_relation_neighbours_are_reported_apart_from_counterfacts_ns():
    base = _figures(es=0.0, ps=0.0, ns_same_relation=80.0, nm_same_relation=40.0, s=0.0, em=-50.0, pm=-40.0)
    edited = _figures(es=100.0, ps=100.0, ns_same_relation=60.0, nm_same_relation=20.0, s=85.7, em=50.0, pm=40.0)
    line = bench_edit.before_after(base, edited)
    assert "NS same-rel 80→60" in line and "NM same-rel 40→20" in line
    assert not re.search(r"\bN[SM] -?\d", line), "no same-target neighbour: no CounterFact NS / NM"


def test_summary_means_each_figure_before_and_after_over_the_facts_that_have_it():
    rows = [_row(_figures(es=0.0, ns=100.0), _figures(es=100.0, ns=50.0)),
            _row(_figures(es=50.0, ns_same_relation=80.0), _figures(es=100.0, ns_same_relation=40.0))]
    summary = bench_edit.summarise(rows)
    assert summary["es"] == pytest.approx(100.0) and summary["base"]["es"] == pytest.approx(25.0)
    # NS reads the first fact only, NS same-relation the second: a NaN is no fact's score, not a zero
    assert summary["ns"] == pytest.approx(50.0) and summary["base"]["ns"] == pytest.approx(100.0)
    assert summary["ns_same_relation"] == pytest.approx(40.0)
    assert summary["base"]["ns_same_relation"] == pytest.approx(80.0)
    assert math.isnan(summary["nm"]) and math.isnan(summary["base"]["nm"])
    assert summary["top1_new"] == pytest.approx(100.0)


def _sweep_row(layer: int, es: float, ps: float, ns: float, ns_base: float, edit_s: float, name: str) -> dict:
    return {"layer": layer, "settings": {"name": name},
            "summary": {"es": es, "ps": ps, "ns": ns, "edit_s": edit_s, "base": {"ns": ns_base}}}


def test_sweep_picks_the_largest_ns_share_among_settings_that_reach_es_and_ps():
    rows = [_sweep_row(6, 100.0, 100.0, 99.0, 100.0, 10.0, "misses PS"),
            _sweep_row(6, 100.0, 89.0, 100.0, 100.0, 10.0, "misses PS too"),
            _sweep_row(5, 99.0, 90.0, 80.0, 100.0, 10.0, "reaches, NS 80%"),
            _sweep_row(4, 100.0, 95.0, 90.0, 100.0, 30.0, "reaches, NS 90%, slow"),
            _sweep_row(5, 100.0, 95.0, 90.0, 100.0, 20.0, "reaches, NS 90%, faster")]
    rows[0]["summary"]["ps"] = 80.0
    assert bench_edit.choose(rows)["settings"]["name"] == "reaches, NS 90%, faster"
    # a share of the pre-edit value, not the raw figure: 45 of 50 beats 80 of 100
    rows.append(_sweep_row(7, 100.0, 100.0, 45.0, 50.0, 50.0, "NS 90% of a lower base"))
    rows.append(_sweep_row(7, 100.0, 100.0, 46.0, 50.0, 50.0, "NS 92% of a lower base"))
    assert bench_edit.choose(rows)["settings"]["name"] == "NS 92% of a lower base"
    assert bench_edit.choose(rows[:2]) is None  # nothing reaches ES / PS: no choice, said as such


def test_sweep_settings_are_validated_like_yaml_edit_params():
    cfg = bench_edit.rome_config({"covariance": {"corpus": "place-mentions"}, "every_template_key": True},
                                 n_tokens=1234, seed=7)
    assert cfg.covariance.corpus == "place-mentions" and cfg.covariance.n_tokens == 1234
    assert cfg.every_template_key and cfg.seed == 7
    grid_entry = {"covariance": {"corpus": "place-mentions"}}
    bench_edit.rome_config(grid_entry, n_tokens=1, seed=0)
    assert grid_entry == {"covariance": {"corpus": "place-mentions"}}  # the grid as written stays in the results
    with pytest.raises(Exception, match="every_template_keys"):
        bench_edit.rome_config({"every_template_keys": True}, n_tokens=1, seed=0)


def test_sweep_layers_come_from_a_list_or_from_a_finished_locate_stage(tmp_path):
    assert bench_edit.sweep_layers("4,5,6", 30) == [4, 5, 6]
    with pytest.raises(SystemExit, match="no finished locate stage"):
        bench_edit.sweep_layers(f"locate:{tmp_path}", 30)


def test_rome_layer_and_settings_come_from_the_shipped_run_config():
    layers, params = bench_edit.run_config_rome(Path(__file__).resolve().parents[1] / "configs" / "smollm2-rome.yaml")
    assert [int(x) for x in layers.split(",")] and isinstance(params, dict)
    bench_edit.rome_config(params, n_tokens=1, seed=0)  # the params are a valid RomeConfig


def _reach_row(name: str, reached: int, same_relation: int, p90: float, paraphrase: float) -> dict:
    def shares(n_reached, p90=0.1, median=0.1):
        return {"n": 10, "median": median, "p90": p90, "reached": n_reached, "below_half": 0}
    return {"settings": {"name": name}, "shares": {"same_answer": shares(reached, p90), "same_relation":
                                                   shares(same_relation), "paraphrase": shares(0, median=paraphrase)}}


def test_reach_sweep_picks_the_fewest_reached_neighbours_among_settings_that_keep_the_subject():
    rows = [_reach_row("plain", 5, 3, 0.45, 1.0), _reach_row("loses its own subject", 0, 0, 0.05, 0.9),
            _reach_row("two reached", 2, 2, 0.2, 0.99), _reach_row("two, fewer same-relation", 2, 1, 0.25, 0.99),
            _reach_row("two, one, lower p90", 2, 1, 0.21, 0.97)]
    assert bench_edit.choose_reach(rows)["settings"]["name"] == "two, one, lower p90"


def test_neighbour_reach_measures_the_share_of_the_edit_each_prompt_takes(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    # the first fact's own bare prompt as a neighbour: its subject key is a template key, which u maps to exactly 1
    facts[0] = replace(facts[0], neighborhood_prompts=(facts[0].text, *facts[0].neighborhood_prompts))
    cfg = bench_edit.rome_config({"every_template_key": True, "context_lengths": [[5, 2]],
                                  "covariance": {"corpus": str(tiny_corpus(tmp_path / "c.txt")), "seq_len": 24}},
                                 n_tokens=1500, seed=0)
    templates = [t for group in bench_edit.rome_templates(handle, cfg) for t in group]
    first = bench_edit.neighbour_reach(handle, facts[:1], 1, cfg, templates)["shares"]
    assert first["same_answer"]["n"] == 2 and first["paraphrase"]["n"] == 1
    assert first["same_answer"]["p90"] >= 0.99  # of two shares, the larger: the fact's own prompt
    every = bench_edit.neighbour_reach(handle, facts, 1, cfg, templates)
    assert every["shares"]["same_answer"]["n"] == 4 and every["kept_words"] == {0: [], 1: [], 2: []}
    kept = bench_edit.neighbour_reach(handle, facts, 1, replace(cfg, neighbour_keys=3), templates)["kept_words"]
    assert all(len(words) == 3 for words in kept.values())
