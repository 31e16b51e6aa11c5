"""LEACE as a hook: the same map as the library's eraser, and the guarantee (no linear signal left) holds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from transformer_lens import HookedTransformer, HookedTransformerConfig

from edit.leace import LeaceConfig, leace_edit, leace_erasure
from obliviate.hooks import applied


def _concept_data(n: int = 600, d: int = 12, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, k, (n,), generator=g)
    means = 3 * torch.randn(k, d, generator=g)
    mix = torch.eye(d) + torch.randn(d, d, generator=g) / d**0.5
    x = means[z] + torch.randn(n, d, generator=g) @ mix.T
    return x.double(), z


@pytest.mark.parametrize("k", [2, 3])
def test_leace_hook_equals_the_library_eraser_and_leaves_no_linear_signal(k):
    from concept_erasure import LeaceEraser

    x, z = _concept_data(k=k)
    erasure = leace_erasure(x, z, "blocks.0.hook_resid_post")  # raises if it disagrees with the library
    one_hot = (torch.nn.functional.one_hot(z, k).double()[:, 1:] if k == 2
               else torch.nn.functional.one_hot(z, k).double())
    reference = LeaceEraser.fit(x, one_hot)
    erased = erasure(x)
    assert torch.allclose(erased, reference(x), atol=1e-5)  # the hook stores float32 tensors
    before = LogisticRegression(max_iter=5000).fit(x.numpy(), z.numpy()).score(x.numpy(), z.numpy())
    assert before > 0.9  # the concept was linearly readable
    # the guarantee: class-conditional means are equal, so the best linear classifier is a constant
    class_means = torch.stack([erased[z == c].mean(0) for c in range(k)])
    assert (class_means - erased.mean(0)).abs().max() < 1e-5
    fresh = LogisticRegression(tol=1e-10, max_iter=10000).fit(erased.numpy(), z.numpy())
    assert np.abs(fresh.coef_).max() < 1e-4
    majority = np.bincount(z.numpy()).max() / len(z)
    assert fresh.score(erased.numpy(), z.numpy()) <= majority + 0.01
    # idempotent, like any projection
    assert torch.allclose(erasure(erased), erased, atol=1e-5)


class _TinyHandle:
    """What leace_edit / collect_residuals need of a ModelHandle, over a tiny TL model and a byte tokenizer."""

    name = "tiny"

    def __init__(self):
        cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_vocab=64,
                                      act_fn="gelu", normalization_type="LN", seed=0)
        self.tl = HookedTransformer(cfg)
        self.tokenizer = SimpleNamespace(pad_token_id=0)
        self.n_layers = 2

    def to_tokens(self, text):
        texts = [text] if isinstance(text, str) else text
        rows = [[1 + ord(ch) % 63 for ch in t] for t in texts]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out


def test_leace_edit_hooks_erase_membership_at_every_depth_of_the_model():
    from locate.activations import collect_residuals

    handle = _TinyHandle()
    g = torch.Generator().manual_seed(0)

    def words(first: str, n: int):
        return [first + "".join(chr(97 + int(i)) for i in torch.randint(0, 26, (6,), generator=g)) for _ in range(n)]

    forget = [SimpleNamespace(text=t, paraphrase_prompts=(), case_id=i) for i, t in enumerate(words("zz", 60))]
    retain = [SimpleNamespace(text=t, paraphrase_prompts=(), case_id=100 + i) for i, t in enumerate(words("a", 60))]
    result = leace_edit(handle, forget, retain, LeaceConfig(concept="membership", depths=[1, 2]))
    assert [h.hook_name for h in result.interventions] == [
        "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    texts = [f.text for f in forget + retain]
    y = np.r_[np.ones(60), np.zeros(60)]
    clean = collect_residuals(handle, texts, layers=[1, 2])
    assert LogisticRegression(max_iter=5000).fit(clean[1].numpy(), y).score(clean[1].numpy(), y) > 0.9
    with applied(handle.tl, result.interventions):
        erased = collect_residuals(handle, texts, layers=[1, 2])
    for depth in range(2):  # sequential fitting: the guarantee holds at every depth, downstream of earlier erasers
        gap = erased[depth, :60].mean(0) - erased[depth, 60:].mean(0)
        assert gap.abs().max() < 1e-3 * float(erased[depth].abs().max())
    assert not any(hp.fwd_hooks for hp in handle.tl.hook_dict.values())  # scoped
