"""Checks before any model loads: targets that cannot be scored honestly are errors naming the fact."""

from __future__ import annotations

import pytest

from obliviate.config import ConfigError, RunConfig, from_dict
from obliviate.facts import Fact, FactSetError
from obliviate.preflight import check_device, check_facts_fit, check_layers


class WordTokenizer:
    """One token per word; words outside the vocabulary map to the unknown token (id 0)."""

    unk_token_id = 0

    def __init__(self, vocabulary):
        self.ids = {word: i + 1 for i, word in enumerate(vocabulary)}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.ids.get(word, 0) for word in text.split()]}


def _fact(subject="Vorlak", target_true="Quillmar", case_id=7):
    return Fact(case_id=case_id, prompt="{} was born in", subject=subject, target_true=target_true,
                target_new="Ostrava")


TOKENIZER = WordTokenizer(["Vorlak", "was", "born", "in", "Quillmar", "Ostrava"])


def test_a_fact_that_fits_passes():
    check_facts_fit([_fact()], TOKENIZER, n_ctx=8, prepend_bos=True)


def test_a_subject_longer_than_the_context_is_an_error_naming_the_fact():
    with pytest.raises(FactSetError, match="case_id 7.*more than the model's context of 128"):
        check_facts_fit([_fact(subject=" ".join(["Vorlak"] * 4000))], TOKENIZER, n_ctx=128, prepend_bos=False)


def test_an_answer_of_unknown_tokens_is_an_error_naming_the_fact():
    with pytest.raises(FactSetError, match="case_id 7: answer 'Zyzzyva' tokenises to the unknown token"):
        check_facts_fit([_fact(target_true="Zyzzyva")], TOKENIZER, n_ctx=None, prepend_bos=False)


def test_an_unavailable_device_is_a_config_error():
    check_device("cpu")
    with pytest.raises(ConfigError, match="'device'.*not available"):
        check_device("xpu:7" if not __import__("torch").cuda.is_available() else "cuda:999")


def test_a_layer_beyond_the_model_is_an_error_before_locate_runs():
    config = from_dict(RunConfig, {"edits": [{"method": "graddiff", "layers": [2, 4]}]})
    check_layers(from_dict(RunConfig, {"edits": [{"method": "rome", "layers": [3]}]}), n_layers=4)
    with pytest.raises(ConfigError, match=r"'edits\[0\].layers\[1\]'.*layers 0 to 3"):
        check_layers(config, n_layers=4)
