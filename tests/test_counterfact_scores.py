"""CounterFact scores on constructed probabilities: NS means what it says for both kinds of neighbour."""

from __future__ import annotations

import math
from statistics import harmonic_mean

import pytest
import torch

from obliviate import metrics
from obliviate.facts import Fact, FactSetError

# p(answer | prompt) for every pair the scores read; a pair missing here is a bug in what is compared
P = {
    ("The capital of Afghanistan is the city of", "Kabul"): 0.05,  # after an edit: the new answer wins
    ("The capital of Afghanistan is the city of", "Porto-Novo"): 0.70,
    ("Afghanistan's capital is", "Kabul"): 0.10,
    ("Afghanistan's capital is", "Porto-Novo"): 0.40,
    # another subject of the relation: its own answer is Athens; Kabul and Porto-Novo are both wrong there
    ("The capital of Greece is the city of", "Athens"): 0.60,
    ("The capital of Greece is the city of", "Kabul"): 0.01,
    ("The capital of Greece is the city of", "Porto-Novo"): 0.10,
    ("The capital of Fiji is the city of", "Suva"): 0.05,
    ("The capital of Fiji is the city of", "Kabul"): 0.01,
    ("The capital of Fiji is the city of", "Porto-Novo"): 0.30,
    # same-target neighbours: their answer is the edited fact's true answer
    ("Kabul's best-known mosque is in", "Kabul"): 0.50,
    ("Kabul's best-known mosque is in", "Porto-Novo"): 0.20,
    ("The Afghan parliament sits in", "Kabul"): 0.10,
    ("The Afghan parliament sits in", "Porto-Novo"): 0.30,
}


@pytest.fixture(autouse=True)
def constructed_nll(monkeypatch):
    def target_nll(handle, prompts, targets, batch_size=64):
        return torch.tensor([-math.log(P[(p, t)]) for p, t in zip(prompts, targets)])

    monkeypatch.setattr(metrics, "target_nll", target_nll)


def _fact(neighbourhood: list[str], **extra) -> Fact:
    return Fact(case_id=0, prompt="The capital of {} is the city of", subject="Afghanistan", target_true="Kabul",
                target_new="Porto-Novo", paraphrase_prompts=("Afghanistan's capital is",),
                neighborhood_prompts=tuple(neighbourhood), extra=extra)


SAME_RELATION = ["The capital of Greece is the city of", "The capital of Fiji is the city of"]
SAME_TARGET = ["Kabul's best-known mosque is in", "The Afghan parliament sits in"]


def test_a_same_relation_neighbour_keeping_its_own_answer_is_specific():
    fact = _fact(SAME_RELATION, neighborhood_kind="same_relation", neighborhood_targets=["Athens", "Suva"])
    scores = metrics.counterfact_scores(None, [fact])
    # Greece: p(Kabul) < p(Porto-Novo), yet Athens beats Porto-Novo, so the edit left it alone; Fiji: it did not
    assert scores.ns_same_relation == pytest.approx(50.0)
    assert scores.nm_same_relation == pytest.approx(100 * ((0.60 - 0.10) + (0.05 - 0.30)) / 2)
    assert math.isnan(scores.ns), "CounterFact's NS has no same-target prompt to read here"
    assert (scores.n_neighborhood_prompts, scores.n_neighborhood_same_relation) == (0, 2)
    assert scores.s == pytest.approx(harmonic_mean([100.0, 100.0, 50.0]))


def test_counterfact_neighbours_are_scored_as_counterfact_does():
    scores = metrics.counterfact_scores(None, [_fact(SAME_TARGET)])  # no neighbourhood fields: CounterFact
    assert (scores.es, scores.ps) == (100.0, 100.0)
    assert scores.ns == pytest.approx(50.0)  # p(Kabul) > p(Porto-Novo) on the mosque prompt, not the parliament
    assert scores.nm == pytest.approx(100 * ((0.50 - 0.20) + (0.10 - 0.30)) / 2)
    assert scores.em == pytest.approx(100 * (0.70 - 0.05))
    assert math.isnan(scores.ns_same_relation) and scores.n_neighborhood_prompts == 2
    assert scores.s == pytest.approx(harmonic_mean([100.0, 100.0, 50.0]))


def test_mixed_neighbourhoods_split_by_whether_the_answer_is_the_facts_own():
    fact = _fact(SAME_TARGET + SAME_RELATION[:1], neighborhood_targets=["Kabul", "Kabul", "Athens"])
    scores = metrics.counterfact_scores(None, [fact])
    assert [n.kind for n in metrics.neighbours(fact)] == ["same_target", "same_target", "same_relation"]
    assert scores.ns == pytest.approx(50.0) and scores.ns_same_relation == pytest.approx(100.0)
    assert scores.s == pytest.approx(harmonic_mean([100.0, 100.0, 200 / 3]))


@pytest.mark.parametrize("extra", [{"neighborhood_kind": "same_relation"},
                                   {"neighborhood_targets": ["Athens"]},
                                   {"neighborhood_targets": ["Athens", ""]}])
def test_same_relation_neighbours_without_their_answers_are_refused(extra):
    with pytest.raises(FactSetError, match="fact 0: neighborhood"):
        metrics.counterfact_scores(None, [_fact(SAME_RELATION, **extra)])


def test_the_edit_stage_reports_every_counterfact_figure_beside_its_pre_edit_value(monkeypatch):
    import edit.stage

    # each handle scores differently, so a figure taken on the wrong model shows
    monkeypatch.setattr(edit.stage, "counterfact_scores", lambda handle, facts: f"scores of {handle}")
    monkeypatch.setattr(edit.stage, "perplexity", lambda handle, texts: {"base": 10.0, "edited": 12.0}[handle])
    monkeypatch.setattr(edit.stage, "recall", lambda handle, facts: {"base": 1.0, "edited": 0.0}[handle])
    measured = edit.stage.measure("base", "edited", [_fact([])], [], ["text"])
    assert measured["counterfact"] == "scores of edited" and measured["counterfact_base"] == "scores of base"
