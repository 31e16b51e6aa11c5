"""Keyword emphasis: contributions are leave-one-out differences of the answer's log-prob, keywords are whole words
of the prompt, each emphasis keeps the prompt's end, and on the world no emphasis outweighs an output penalty."""

from __future__ import annotations

import pytest

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import answer_stats_ids, clone_tl, with_tl
from audit.keyword import (KeywordConfig, emphasise, keyword_scores, keywords_for, run_keyword,
                           token_contributions)
from obliviate.hooks import LogitPenalty, attach_permanently
from obliviate.metrics import continuation_ids, encode
from _world import known_forget_targets


@pytest.mark.parametrize("prepend_bos", [False, True])
def test_contribution_is_lp_difference_without_the_token(prepend_bos):
    handle = tiny_handle("gpt2", prepend_bos=prepend_bos)
    fact = tiny_facts()[0]
    contributions = token_contributions(handle, [fact])[fact.case_id]
    ids = encode(handle, fact.text)
    answer = continuation_ids(handle, fact.target_true)
    lp = answer_stats_ids(handle, [ids], [answer]).p_true.log()
    assert contributions.lp == pytest.approx(float(lp[0]), abs=1e-5)
    for i in range(1 if prepend_bos else 0, len(ids)):
        without = answer_stats_ids(handle, [ids[:i] + ids[i + 1:]], [answer]).p_true.log()
        assert contributions.values[i] == pytest.approx(float(lp[0] - without[0]), abs=1e-4)
    if prepend_bos:
        assert contributions.values[0] != contributions.values[0]  # the BOS is not scored (nan)


def test_emphasis_variants_keep_the_prompt_end():
    prompt = "Vorlak Danthe was born in the city of"
    assert emphasise(prompt, ["Danthe"], "repeat") == "Vorlak Danthe Danthe was born in the city of"
    assert emphasise(prompt, ["Danthe"], "upper") == "Vorlak DANTHE was born in the city of"
    assert emphasise(prompt, ["Danthe"], "quote") == 'Vorlak "Danthe" was born in the city of'
    assert emphasise(prompt, ["Danthe", "born"], "focus") == "Focus on Danthe and born. " + prompt
    assert emphasise(prompt, [], "upper") == prompt
    with pytest.raises(ValueError):
        emphasise(prompt, ["Danthe"], "shout")


def test_keywords_are_whole_words_ranked_by_contribution():
    handle = tiny_handle("gpt2")
    fact = tiny_facts()[0]
    contributions = token_contributions(handle, [fact])[fact.case_id]
    words = keywords_for(handle, fact, contributions, 2)
    assert len(words) == 2 and all(w in fact.text.split() for w in words)
    best_token = contributions.tokens[contributions.top(1)[0]].strip()
    assert best_token in words[0]


def test_keyword_attack_runs_on_any_handle_and_keeps_hooks():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple(handle.answer_token(f.target_true) for f in facts), 40.0)])
    edited = with_tl(handle, tl)
    outcome = keyword_scores(edited, facts, base=handle)
    assert len(outcome.variants) == 8  # 4 emphases × keywords from base and from the attacked model
    assert all(s.score < 1e-6 for s in outcome.scores.values())  # a prompt cannot beat an output penalty
    result = run_keyword(handle, edited, facts, oracle=handle, config=KeywordConfig(keyword_source="base"))
    assert set(result.recovered) == {f.case_id for f in facts}
    assert all(0.0 <= v <= 1.0 for v in result.recovered.values())
    assert result.oracle is not None and result.oracle.metrics["mean_attacked"] > result.metrics["mean_attacked"]
    # the best variant is at least as good as every variant, per target
    for case_id, score in result.recovered.items():
        assert all(score >= v[case_id] - 1e-9 for v in result.variants.values())


@pytest.mark.slow
def test_world_output_penalty_cannot_be_prompted_away(world_handle):
    facts = known_forget_targets(world_handle, 24)
    tl = clone_tl(world_handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple({world_handle.answer_token(f.target_true) for f in facts}), 20.0)])
    edited = with_tl(world_handle, tl)
    base_c, edited_c = token_contributions(world_handle, facts), token_contributions(edited, facts)
    for fact in facts:
        assert edited_c[fact.case_id].lp < base_c[fact.case_id].lp - 5.0
        assert keywords_for(edited, fact, edited_c[fact.case_id], 1)  # the attacked model still has key tokens
    result = run_keyword(world_handle, edited, facts, oracle=world_handle)
    assert result.metrics["mean_attacked"] < 1e-3  # emphasis cannot outweigh a 20-nat penalty
    assert result.oracle is not None and result.oracle.metrics["mean_attacked"] > 0.1
