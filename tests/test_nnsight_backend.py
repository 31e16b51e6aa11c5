"""The nnsight backend: the same trace as the TransformerLens one, the same activations as TL's cache, on GPT-2- and
Llama-architecture HF models (tiny random ones, SmolLM2, the world model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _locate_tiny import WORDS, one_thread, tiny_facts, word_tokenizer  # noqa: F401 (autouse fixture)

from locate.causal_trace import known_facts, subject_embedding_std, trace_fact, trace_facts
from locate.nnsight_backend import collect_activations, nnsight_trace_fact, site_map
from locate.tokens import fact_subject_tokens
from obliviate.models import ModelHandle

SITES = ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.2.hook_mlp_out", "blocks.3.hook_resid_post"]


def _tiny_hf_handle(arch: str, tmp_path) -> ModelHandle:
    """A tiny random HF model, wrapped in TL by the project's own converter (so both wrappers share weights)."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    from obliviate.tl_wrap import hooked_from_hf

    torch.manual_seed(0)
    # initializer_range 0.5 (not 0.02): a tiny random model whose layers visibly mix tokens, so maps are not flat
    ids = dict(bos_token_id=1, eos_token_id=0, pad_token_id=0, initializer_range=0.5)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=4, n_head=4, **ids))
    elif arch == "gemma3":  # post-attention / post-MLP norms: the sites are the norms' outputs
        hf = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=4, query_pre_attn_scalar=4, sliding_window=6,
            layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=32, **ids))
        with torch.no_grad():
            for name, param in hf.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.5)
    else:
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=32, tie_word_embeddings=False, **ids))
    hf.eval()
    hf.config.architectures = [type(hf).__name__]
    hf.config.save_pretrained(tmp_path)
    tokenizer = word_tokenizer()
    tl = hooked_from_hf(tmp_path, hf, tokenizer, prepend_bos=False)
    return ModelHandle(name=f"tiny-hf-{arch}", hf_dir=tmp_path, hf=hf, tokenizer=tokenizer, tl=tl, prepend_bos=False)


def _known_tiny(handle):
    out = []
    for fact in tiny_facts():
        logits = handle.tl(handle.to_tokens(fact.text))[0, -1].clone()
        logits[handle.tokenizer.unk_token_id] = -float("inf")  # an answer must be a word (answers never score <unk>)
        out.append(dataclasses.replace(fact, target_true=WORDS[int(logits.argmax())]))
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_nnsight_trace_equals_the_transformer_lens_trace_on_tiny_models(arch, tmp_path):
    handle = _tiny_hf_handle(arch, tmp_path)
    for fact in _known_tiny(handle)[1:]:
        std = 3 * subject_embedding_std(handle, [fact])
        tl = trace_fact(handle, fact, noise_std=std, n_samples=3, window=2)
        nn = nnsight_trace_fact(handle, fact, noise_std=std, n_samples=3, window=2, max_rows=9)
        for kind in ("resid", "mlp", "attn"):
            assert nn[kind].low == pytest.approx(tl[kind].low, abs=1e-5)
            assert nn[kind].high == pytest.approx(tl[kind].high, abs=1e-5)
            assert torch.allclose(nn[kind].scores, tl[kind].scores, atol=1e-5, rtol=0), kind
            assert (tl[kind].scores.max() - tl[kind].scores.min()).item() > 1e-3, kind  # not a flat map


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_collected_activations_equal_the_transformer_lens_cache(arch, tmp_path):
    handle = _tiny_hf_handle(arch, tmp_path)
    texts = [tiny_facts()[0].text, "Big Ben is"]  # different lengths: the batch is padded
    acts = collect_activations(handle, texts, SITES)
    for i, text in enumerate(texts):
        _, cache = handle.tl.run_with_cache(handle.to_tokens(text))
        for site in SITES:
            assert acts[site][i].shape == cache[site][0].shape
            # HF and TL are two float32 implementations: agree to float error relative to the values' scale
            scale = cache[site][0].abs().max().item()
            assert (acts[site][i] - cache[site][0]).abs().max().item() <= 2e-5 * scale, (site, i)


def test_unknown_architectures_and_sites_are_clear_errors(tmp_path):
    handle = _tiny_hf_handle("gpt2", tmp_path)
    assert site_map(handle).layers == "transformer.h"
    with pytest.raises(ValueError, match="unsupported site"):
        collect_activations(handle, ["Big Ben is"], ["blocks.0.attn.hook_pattern"])
    handle.hf.config.model_type = "bert"
    with pytest.raises(NotImplementedError, match="bert"):
        site_map(handle)


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_nnsight_trace_equals_transformer_lens(smollm2_handle):
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    facts = resolve_facts("smollm2")
    known, _ = known_facts(handle, facts[:10])
    fact = known[0]
    std = 3 * subject_embedding_std(handle, facts)
    subject = fact_subject_tokens(handle, fact)
    cells = dict(positions=[subject.last, -1], layers=[1, 10, 20, 29], n_samples=3, kinds=["resid", "mlp"])
    tl = trace_fact(handle, fact, noise_std=std, **cells)
    nn = nnsight_trace_fact(handle, fact, noise_std=std, **cells)
    for kind in ("resid", "mlp"):
        assert nn[kind].high > nn[kind].low
        mask = ~torch.isnan(tl[kind].scores)
        assert torch.equal(mask, ~torch.isnan(nn[kind].scores))
        diff = (nn[kind].scores[mask] - tl[kind].scores[mask]).abs().max().item()
        assert diff < 1e-4, (kind, diff)
    acts = collect_activations(handle, [fact.text], ["blocks.5.hook_mlp_out", "blocks.12.hook_resid_post"])
    _, cache = handle.tl.run_with_cache(handle.to_tokens(fact.text))
    for site, values in acts.items():
        assert torch.allclose(values[0], cache[site][0], atol=1e-3, rtol=1e-3), site


@pytest.mark.slow
def test_world_nnsight_backend_runs_through_trace_facts(world_handle):
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world")[:40]
    known, _ = known_facts(world_handle, facts)
    one = known[:1]
    std = 3 * subject_embedding_std(world_handle, facts)
    via_nn = trace_facts(world_handle, one, noise_std=std, n_noise_samples=3, kinds=["resid", "mlp"],
                         backend="nnsight")
    via_tl = trace_facts(world_handle, one, noise_std=std, n_noise_samples=3, kinds=["resid", "mlp"])
    for kind in ("resid", "mlp"):
        got, want = via_nn.traces[0][kind].scores, via_tl.traces[0][kind].scores
        assert (got - want).abs().max().item() < 1e-4, kind
