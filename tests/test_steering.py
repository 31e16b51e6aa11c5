"""Steering vectors and suppression: they move the logits the way they promise, and leave nothing behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from edit.steering import SteeringVector, hook_activations, mean_difference_vector
from edit.suppress import SuppressConfig, suppress_edit, unembedding_directions
from obliviate.hooks import applied

VOCAB = 40


class TinyHandle:
    """The slice of ModelHandle the steering code uses, over a tiny random TL model and a character tokenizer."""

    def __init__(self, model: HookedTransformer):
        self.tl = model
        self.tokenizer = SimpleNamespace(pad_token_id=0)
        self.n_layers = model.cfg.n_layers

    def _ids(self, text: str) -> list[int]:
        return [1 + ord(ch) % (VOCAB - 1) for ch in text]

    def to_tokens(self, text: str | list[str]) -> torch.Tensor:
        texts = [text] if isinstance(text, str) else text
        rows = [self._ids(t) for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out

    def answer_token(self, target: str) -> int:
        return self._ids(" " + target)[1]


@pytest.fixture()
def tiny():
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_vocab=VOCAB,
                                  act_fn="gelu", normalization_type="LN", seed=0)
    return TinyHandle(HookedTransformer(cfg))


def test_mean_difference_is_the_difference_of_the_last_token_means(tiny):
    a, b = ["abc", "hello there"], ["xy", "zzzz", "q"]
    vector = mean_difference_vector(tiny, a, b, layer=1)
    acts_a = torch.stack([tiny.tl.run_with_cache(tiny.to_tokens(t))[1]["blocks.1.hook_resid_pre"][0, -1] for t in a])
    acts_b = torch.stack([tiny.tl.run_with_cache(tiny.to_tokens(t))[1]["blocks.1.hook_resid_pre"][0, -1] for t in b])
    assert torch.allclose(vector.vector, acts_a.mean(0) - acts_b.mean(0), atol=1e-5)
    # padding must not leak into the per-text reading (batched = one by one)
    assert torch.allclose(hook_activations(tiny, a + b, "blocks.1.hook_resid_pre", "all")[0],
                          tiny.tl.run_with_cache(tiny.to_tokens("abc"))[1]["blocks.1.hook_resid_pre"][0].mean(0),
                          atol=1e-5)


def test_steering_moves_the_target_logit_and_is_removed_on_exit(tiny):
    model = tiny.tl
    tokens = tiny.to_tokens("steer me")
    target = 7
    clean = model(tokens)[0, -1]
    # the residual direction that raises the target's logit most, added before the last block's output is read
    direction = unembedding_directions(model, [target])[0]
    vector = SteeringVector("blocks.1.hook_resid_post", direction / direction.norm())
    for multiplier, sign in ((3.0, 1), (-3.0, -1)):
        with vector.apply(model, multiplier):
            steered = model(tokens)[0, -1]
        change = (steered.log_softmax(-1) - clean.log_softmax(-1))[target]
        assert sign * change > 0.05
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())
    assert torch.allclose(model(tokens)[0, -1], clean)


def test_steering_is_removed_even_if_the_block_raises(tiny):
    vector = SteeringVector("blocks.0.hook_resid_post", torch.ones(16))
    with pytest.raises(RuntimeError):
        with vector.apply(tiny.tl, 1.0):
            raise RuntimeError("boom")
    assert not any(hp.fwd_hooks for hp in tiny.tl.hook_dict.values())


@pytest.mark.parametrize("kind", ["logit", "unembed"])
def test_suppression_hides_the_answer(tiny, kind):
    prompt = "the answer is"
    base = tiny.tl(tiny.to_tokens(prompt))[0, -1]
    answer_id = int(base.argmax())
    answer = next(chr(c) for c in range(33, 127) if tiny.answer_token(chr(c)) == answer_id)
    fact = SimpleNamespace(text=prompt, target_true=answer, target_new="x", case_id=0)
    result = suppress_edit(tiny, [fact], [], SuppressConfig(kind=kind, penalty=20.0))
    with applied(tiny.tl, result.interventions):
        hidden = tiny.tl(tiny.to_tokens(prompt))[0, -1]
    assert int(hidden.argmax()) != answer_id
    assert hidden.log_softmax(-1)[answer_id] < base.log_softmax(-1)[answer_id] - 2.0


def test_steering_edit_is_savable_and_reloads_to_the_same_hook(tiny, tmp_path):
    from edit.steering import SteeringConfig, steering_edit
    from obliviate.hooks import load_interventions, save_interventions

    forget = [SimpleNamespace(text=t, paraphrase_prompts=(), case_id=i) for i, t in enumerate(["zq one", "zq two"])]
    retain = [SimpleNamespace(text=t, paraphrase_prompts=(), case_id=9 + i) for i, t in enumerate(["ab", "abc d"])]
    result = steering_edit(tiny, forget, retain, SteeringConfig(layer=1, multiplier=-2.0))
    save_interventions(tmp_path, result.interventions)
    (loaded,) = load_interventions(tmp_path)
    tokens = tiny.to_tokens("zq one")
    with applied(tiny.tl, result.interventions):
        steered = tiny.tl(tokens)
    with applied(tiny.tl, [loaded]):
        reloaded = tiny.tl(tokens)
    assert loaded.hook_name == "blocks.1.hook_resid_pre" and loaded.scale == -2.0
    assert torch.allclose(steered, reloaded)
    assert not torch.allclose(steered, tiny.tl(tokens))
