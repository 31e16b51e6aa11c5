"""In-context recovery: the prompts hold the named facts (the subject's retained facts, other subjects' facts of
the relation) before the question, never a target fact and never the answer; the score is p_true on that prompt."""

from __future__ import annotations

import pytest

from _locate_tiny import tiny_handle
from audit.attack_result import answer_stats, fact_sentence
from audit.in_context import (AnswerInContextError, InContextConfig, check_prompt, in_context_prompts,
                              run_in_context)
from obliviate.facts import Fact


def _facts() -> list[Fact]:
    city = "{} is in the city of"
    return [
        Fact(0, city, "Eiffel Tower", "Paris", "Rome", relation_id="city"),          # target
        Fact(1, city, "Colosseum", "Rome", "Paris", relation_id="city"),             # target
        Fact(2, "The {} is a famous", "Eiffel Tower", "Tower", "Ben", relation_id="kind"),  # retained, subject 0
        Fact(3, "{} is located in the city of Paris and is", "Eiffel Tower", "famous", "Big",
             relation_id="where"),                                                    # shows answer 0: never used
        Fact(4, city, "Big Ben", "London", "Paris", relation_id="city"),             # shot
        Fact(5, city, "Big Tower", "Paris", "London", relation_id="city"),           # shot whose answer is Paris
    ]


def test_prompts_hold_the_named_facts_and_never_the_answer():
    handle = tiny_handle("gpt2", n_ctx=64)
    facts = _facts()
    targets = facts[:2]
    prompts = in_context_prompts(handle, targets, facts, InContextConfig(n_subject_facts=5, n_shots=5))
    subject, shots = prompts["subject_facts"], prompts["relation_shots"]
    assert subject[0] == f"{fact_sentence(facts[2])} {facts[0].text}"  # the subject's retained fact, not fact 3
    assert 1 not in subject  # the Colosseum has no retained fact
    assert fact_sentence(facts[4]) in shots[0] and fact_sentence(facts[5]) not in shots[0]  # 5 would show "Paris"
    assert fact_sentence(facts[4]) in shots[1] and fact_sentence(facts[5]) in shots[1]
    for name, by_case in prompts.items():
        for case_id, prompt in by_case.items():
            target = facts[case_id]
            assert prompt.endswith(target.text)
            assert target.target_true not in prompt
            assert not any(fact_sentence(t) in prompt for t in targets)


def test_a_prompt_showing_the_answer_is_refused():
    facts = _facts()
    with pytest.raises(AnswerInContextError, match="shows its answer 'Paris'"):
        check_prompt(f"{fact_sentence(facts[3])} {facts[0].text}", facts[0], facts[:2])


def test_a_long_context_loses_whole_facts_from_the_front_to_fit():
    from audit.in_context import build_prompt
    from obliviate.metrics import encode

    facts = _facts()
    wide, narrow = tiny_handle("gpt2", n_ctx=64), tiny_handle("gpt2", n_ctx=16)
    shots = [facts[4], facts[2]]
    assert build_prompt(wide, facts[0], shots) == " ".join([*map(fact_sentence, shots), facts[0].text])
    short = build_prompt(narrow, facts[0], shots)
    assert short == f"{fact_sentence(facts[2])} {facts[0].text}"  # the first fact went, the last one stays whole
    assert len(encode(narrow, short)) + 1 <= 16


def test_score_is_p_true_after_the_best_context_and_the_oracle_gets_the_same_prompts():
    handle = tiny_handle("gpt2", n_ctx=64)
    facts = _facts()
    targets = facts[:2]
    config = InContextConfig(n_subject_facts=5, n_shots=2)
    result = run_in_context(handle, handle, targets, facts, oracle=handle, config=config)
    prompts = in_context_prompts(handle, targets, facts, config)
    for target in targets:
        options = {name: by_case[target.case_id] for name, by_case in prompts.items() if target.case_id in by_case}
        p = {name: float(answer_stats(handle, [prompt], [target.target_true]).p_true[0])
             for name, prompt in options.items()}
        assert result.recovered[target.case_id] == pytest.approx(max(p.values()), rel=1e-5)
        assert result.targets[target.case_id].details["prompt"] == options[max(p, key=p.get)]
    assert result.oracle is not None and result.oracle.recovered == result.recovered
