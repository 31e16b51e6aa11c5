"""Logit lens: the last depth is the model's own output distribution, every depth is the final norm + unembed of
that depth's residual, and ranks agree with the probabilities."""

from __future__ import annotations

import pytest
import torch
from _locate_tiny import WORDS, one_thread, tiny_facts, tiny_handle  # noqa: F401 (autouse fixture)

from locate.logit_lens import depth_names, layer_logprobs, logit_lens, logit_lens_fact


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_final_depth_is_the_models_output_distribution(arch):
    handle = tiny_handle(arch)
    for fact in tiny_facts():
        tokens = handle.to_tokens(fact.text)[0]
        lens = layer_logprobs(handle, tokens)
        model = handle.tl(tokens[None])[0].float().log_softmax(-1)
        assert lens.shape == (handle.n_layers + 1, len(tokens), len(WORDS))
        assert torch.allclose(lens[-1], model, atol=1e-5)
        assert not torch.allclose(lens[0], model, atol=1e-3)  # the embeddings alone predict something else


def test_each_depth_reads_its_own_residual():
    handle = tiny_handle("gpt2")
    tokens = handle.to_tokens(tiny_facts()[0].text)[0]
    _, cache = handle.tl.run_with_cache(tokens[None])
    lens = layer_logprobs(handle, tokens, positions=[-1])
    for depth, name in enumerate(depth_names(handle.n_layers)):
        resid = cache[name][0, -1:]
        expected = handle.tl.unembed(handle.tl.ln_final(resid[None]))[0].log_softmax(-1)
        assert torch.allclose(lens[depth], expected, atol=1e-5), name


def test_probabilities_ranks_and_top_tokens_agree():
    handle = tiny_handle("llama")
    fact = tiny_facts()[1]
    result = logit_lens_fact(handle, fact)
    lens = layer_logprobs(handle, handle.to_tokens(fact.text)[0])[:, -1]
    target = handle.answer_token(fact.target_true)
    assert torch.allclose(result.probs, lens[:, target].exp(), atol=1e-6)
    for depth in range(handle.n_layers + 1):
        assert result.ranks[depth] == int((lens[depth] > lens[depth, target]).sum())
        assert (result.ranks[depth] == 0) == (result.top_tokens[depth] == fact.target_true)
    assert torch.allclose(result.position_probs[:, -1], result.probs)


def test_first_top1_depth_is_where_the_target_stays_on_top():
    handle = tiny_handle("gpt2")
    fact = tiny_facts()[0]
    final_top = int(handle.tl(handle.to_tokens(fact.text))[0, -1].argmax())
    result = logit_lens(handle, fact.text, WORDS[final_top])
    depth = result.first_top1_depth()
    assert depth is not None
    assert (result.ranks[depth:] == 0).all()
    assert depth == 0 or result.ranks[depth - 1] > 0
    never = logit_lens(handle, fact.text, next(w for w in WORDS[3:] if w != WORDS[final_top]))
    assert never.first_top1_depth() is None


@pytest.mark.smollm2
def test_smollm2_lens_matches_output_and_finds_the_answer_late(smollm2_handle):
    from locate.causal_trace import known_facts
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    known, _ = known_facts(handle, resolve_facts("smollm2")[:10])
    for fact in known[:3]:
        result = logit_lens_fact(handle, fact)
        model = handle.tl(handle.to_tokens(fact.text))[0, -1].float().softmax(-1)
        assert result.probs[-1].item() == pytest.approx(model[result.target_token].item(), abs=1e-5)
        assert result.ranks[-1] == 0  # a known fact: top-1 at the output
        assert result.first_top1_depth() > 0  # and not already at the embeddings
