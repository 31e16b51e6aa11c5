"""SalUn: the mask is exactly the top share of |∂ forget loss / ∂θ|, only masked weights change, the random answers
are other answers of the fact's relation, and a mask share outside (0, 1] is refused naming its key."""

from __future__ import annotations

import copy

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.salun import SalUnConfig, random_answers, saliency_mask, salun_edit
from obliviate.config import ConfigError
from obliviate.facts import Fact
from obliviate.registry import EDITS


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


def _mask(handle, targets, share):
    model = copy.deepcopy(handle.hf)
    for p in model.parameters():
        p.requires_grad_(True)
    names = [n for n, _ in model.named_parameters()]
    return saliency_mask(handle, model, names, targets, share, batch_size=32)


def test_the_mask_is_the_top_share_of_the_forget_gradient(handle):
    facts = tiny_facts()
    mask, saliency = _mask(handle, facts[:2], 0.1)
    inside = torch.cat([saliency[n][mask[n]] for n in mask])
    outside = torch.cat([saliency[n][~mask[n]] for n in mask])
    n_total = inside.numel() + outside.numel()
    assert inside.numel() == int(n_total * 0.1)
    assert float(inside.min()) >= float(outside.max()) and float(inside.min()) > 0
    # |g| is the magnitude of the forget NLL's gradient at θ (one batch: the summed gradient is that batch's)
    from edit.baselines import _answer_nll, answer_batch

    model = copy.deepcopy(handle.hf)
    nll, _ = _answer_nll(model, answer_batch(handle, [f.text for f in facts[:2]], [f.target_true for f in facts[:2]]))
    nll.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(saliency[name], p.grad.abs(), rtol=1e-5, atol=1e-9), name


def test_only_masked_weights_change(handle):
    facts = tiny_facts()
    base = {n: p.detach().clone() for n, p in handle.hf.named_parameters()}
    cfg = SalUnConfig(steps=4, lr=1e-2, batch_size=4, mask_share=0.1)
    result = salun_edit(handle, facts[:2], facts[2:], cfg)
    mask, _ = _mask(handle, facts[:2], 0.1)
    moved = 0
    for name, theta in base.items():
        new = result.changed.get(name, theta)
        assert torch.equal(new[~mask[name]], theta[~mask[name]]), name
        moved += int((new[mask[name]] != theta[mask[name]]).sum())
    assert moved > 0.5 * result.metrics["n_masked"]  # the masked weights did train
    assert all(torch.equal(p, base[n]) for n, p in handle.hf.named_parameters())


def test_random_answers_are_other_answers_of_the_same_relation():
    def fact(i, rel, true, new="Nowhere"):
        return Fact(case_id=i, prompt="{} is in", subject=f"S{i}", target_true=true, target_new=new, relation_id=rel)

    pool = [fact(0, "P1", "A"), fact(1, "P1", "B"), fact(2, "P1", "C"), fact(3, "P2", "X", new="Y")]
    relabel = random_answers(pool, torch.Generator().manual_seed(0))
    drawn = [relabel([pool[0]])[0] for _ in range(200)]
    assert set(drawn) == {"B", "C"}  # never its own answer, every other one of its relation
    assert relabel([pool[3]]) == ["Y"]  # no other answer of P2: the counterfactual


@pytest.mark.parametrize(("key", "value"), [("mask_share", 0.0), ("mask_share", 1.5), ("mask_share", float("nan")),
                                            ("steps", -3)])
def test_a_value_that_cannot_be_used_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"'params\.{key}'"):
        EDITS.get("salun").params({key: value})
