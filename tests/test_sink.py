"""Subjects on a massive activation (edit.sink): found from the model's residual norms, recorded and warned."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import WORDS, tiny_corpus, tiny_facts, tiny_hf_handle
from edit.covariance import CovarianceConfig
from edit.rome import RomeConfig, rome_edit
from edit.sink import SinkSubjectWarning, sink_prompts, subject_prompts
from obliviate.facts import Fact

pytestmark = pytest.mark.usefixtures("one_thread")


def sink_on(handle, word: str, scale: float = 60.0):
    """Make `word`'s embedding a massive activation: its residual dwarfs every other position's from block 0 on."""
    with torch.no_grad():
        handle.tl.embed.W_E[WORDS.index(word)] *= scale
    return handle


def test_subject_prompts_are_the_prompt_and_the_paraphrases_that_name_the_subject():
    fact = Fact(case_id=3, prompt="{} is in the city of", subject="Big Ben", target_true="London",
                target_new="Paris", paraphrase_prompts=("Big Ben was built in the city of", "It is in the city of"))
    texts, ends = subject_prompts(fact)
    assert texts == ["Big Ben is in the city of", "Big Ben was built in the city of"]
    assert ends == [7, 7]


def test_a_subject_ending_on_a_massive_activation_is_found_and_others_are_not():
    handle = tiny_hf_handle("gpt2")
    facts = tiny_facts()  # the Eiffel Tower, Big Ben, the Colosseum
    assert sink_prompts(handle, facts, 1) == {}  # a random model has no sink here
    sink_on(handle, "Ben")
    found = sink_prompts(handle, facts, 1)
    assert found == {1: ["Big Ben is located in the city of"]}
    # the measured ratio decides, not the position: a lower scale leaves Ben an ordinary token
    assert sink_prompts(sink_on(tiny_hf_handle("gpt2"), "Ben", scale=1.5), facts, 1) == {}


def test_rome_warns_and_records_the_prompts_it_cannot_reach(tmp_path, monkeypatch):
    from edit.result import EditRequest, run_method

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = sink_on(tiny_hf_handle("gpt2"), "Ben")
    cov = CovarianceConfig(corpus=str(tiny_corpus(tmp_path / "corpus.txt")), n_tokens=1500, seq_len=24, cache=False)
    cfg = RomeConfig(covariance=cov, context_lengths=[(5, 2)], steps=2)
    facts = tiny_facts()
    with pytest.warns(SinkSubjectWarning, match=r"fact 1 \('Big Ben'"):
        result = rome_edit(handle, facts[1], 1, cfg)
    assert result.metrics["sink_prompts"] == ["Big Ben is located in the city of"]
    with pytest.warns(SinkSubjectWarning):
        record = run_method("rome", handle, EditRequest(targets=facts[:2], goal="rewrite", layers=[1]), cfg)
    assert record.metrics["sink_prompts"] == {1: ["Big Ben is located in the city of"]}
    assert "sink_prompts" not in rome_edit(handle, facts[0], 1, cfg).metrics


@pytest.mark.smollm2
def test_smollm2_keeps_a_prompt_opening_subject_on_its_sink(smollm2_handle):
    """SmolLM2 runs without a BOS token: a one-token subject that opens the prompt ends on the first position, whose
    residual from block 2 on is ~10x any other's; with text before the subject it is an ordinary position."""
    fact = Fact(case_id=153, prompt="{} is located in the continent of", subject="Italy", target_true="Europe",
                target_new="North America", paraphrase_prompts=("The country Italy is located in the continent of",))
    assert sink_prompts(smollm2_handle, [fact], 4) == {153: ["Italy is located in the continent of"]}
    assert sink_prompts(smollm2_handle, [fact], 0) == {}  # the sink forms in blocks 1-2


def test_memit_records_each_fact_whose_subject_is_on_a_sink(tmp_path, monkeypatch):
    from edit.memit import MemitConfig, memit_edit

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = sink_on(tiny_hf_handle("gpt2"), "Ben")
    cov = CovarianceConfig(corpus=str(tiny_corpus(tmp_path / "corpus.txt")), n_tokens=1500, seq_len=24, cache=False)
    with pytest.warns(SinkSubjectWarning, match="memit: fact 1"):
        result = memit_edit(handle, tiny_facts(), [0, 1], MemitConfig(covariance=cov, context_lengths=[(5, 2)],
                                                                      steps=2), goal="rewrite")
    assert result.metrics["sink_prompts"] == {1: ["Big Ben is located in the city of"]}


def test_a_batch_gets_one_warning_naming_its_first_facts():
    from edit.sink import warn_sink_prompts

    handle = sink_on(tiny_hf_handle("gpt2"), "Ben")
    facts = [Fact(case_id=i, prompt="{} is located in the city of", subject="Big Ben", target_true="London",
                  target_new="Paris") for i in range(7)]
    with pytest.warns(SinkSubjectWarning) as caught:
        found = warn_sink_prompts(handle, facts, 1, "memit", shown=5)
    assert len(caught) == 1 and sorted(found) == list(range(7))
    message = str(caught[0].message)
    assert "fact 4 (" in message and "fact 5 (" not in message and "and 2 more" in message
