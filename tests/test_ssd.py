"""Selective Synaptic Dampening: the importance is the mean squared batch gradient (checked against a direct
autograd computation), only weights with I_F > α·I_D change and each by exactly min(λ·I_D / I_F, 1), and bad α / λ
are refused naming their key."""

from __future__ import annotations

import copy

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.ssd import SSDConfig, dampen, importance, ssd_edit
from obliviate.config import ConfigError
from obliviate.registry import EDITS


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


def _trainable_copy(hf):
    model = copy.deepcopy(hf)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def test_importance_is_the_mean_over_batches_of_the_squared_batch_gradient(handle):
    from obliviate.metrics import continuation_ids, encode

    facts = tiny_facts()
    model = _trainable_copy(handle.hf)
    names = [n for n, _ in model.named_parameters()]
    got = importance(handle, model, names, facts, batch_size=2)  # batches: facts 0–1, fact 2
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in (facts[:2], facts[2:]):
        token_nlls = []
        for fact in batch:  # one row at a time, no padding: the batch's mean NLL over all its answer tokens
            p, a = encode(handle, fact.text), continuation_ids(handle, fact.target_true)
            logprobs = model(input_ids=torch.tensor([p + a])).logits[0].log_softmax(-1)
            token_nlls += [-logprobs[len(p) - 1 + j, t] for j, t in enumerate(a)]
        grads = torch.autograd.grad(torch.stack(token_nlls).mean(), list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            if g is not None:
                expected[n] += g ** 2 / 2
    for n in names:
        assert torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-10), n
    assert any(float(v.max()) > 0 for v in got.values())


def test_only_weights_over_the_threshold_change_and_by_exactly_the_stated_factor():
    theta = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    i_f = torch.tensor([[4.0, 0.5, 30.0], [2.0, 0.0, 9.0]])
    i_d = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.5]])
    alpha, lam = 1.5, 0.5
    changed, selected = dampen({"w": theta}, {"w": i_f}, {"w": i_d}, alpha, lam)
    # I_F > 1.5·I_D at (0,0) 4 > 1.5, (0,2) 30 > 3, (1,0) 2 > 0, (1,2) 9 > 0.75; not at (0,1) or (1,1) (0 > 0 fails)
    assert selected["w"].tolist() == [[True, False, True], [True, False, True]]
    beta = {(0, 0): 0.5 * 1.0 / 4.0, (0, 2): 0.5 * 2.0 / 30.0, (1, 0): 0.0, (1, 2): 0.5 * 0.5 / 9.0}
    new = changed["w"]
    for i in range(2):
        for j in range(3):
            if (i, j) in beta:
                factor = torch.tensor(lam) * i_d[i, j] / i_f[i, j]  # the same float32 arithmetic
                assert float(factor) == pytest.approx(beta[(i, j)])
                assert torch.equal(new[i, j], theta[i, j] * factor.clamp(max=1.0))
            else:
                assert torch.equal(new[i, j], theta[i, j])


def test_a_selected_weight_whose_factor_is_one_is_left_alone():
    theta = torch.tensor([1.0, 2.0])
    # selected (I_F > 0.5·I_D) but λ·I_D / I_F = 2·1/1.5 > 1: β = 1, nothing changes
    changed, selected = dampen({"w": theta}, {"w": torch.tensor([1.5, 0.0])}, {"w": torch.tensor([1.0, 1.0])},
                               alpha=0.5, dampening=2.0)
    assert selected["w"].tolist() == [True, False] and changed == {}


def test_the_edit_dampens_exactly_the_selected_weights_of_the_model(handle):
    facts = tiny_facts()
    forget, retain = facts[:1], facts[1:]
    base = {n: p.detach().clone() for n, p in handle.hf.named_parameters()}
    cfg = SSDConfig(alpha=2.0, dampening=0.5, batch_size=2)
    result = ssd_edit(handle, forget, retain, cfg)
    model = _trainable_copy(handle.hf)
    names = list(base)
    # one forget prompt: both estimates use batches of one (a squared batch gradient depends on the batch size)
    assert result.metrics["batch_size"] == 1
    i_f = importance(handle, model, names, forget, 1)
    i_d = importance(handle, model, names, facts, 1)  # D = forget and retain (the reference's full set)
    assert result.changed
    n_selected = 0
    for name, theta in base.items():
        chosen = i_f[name] > 2.0 * i_d[name]
        n_selected += int(chosen.sum())
        new = result.changed.get(name, theta)
        assert torch.equal(new[~chosen], theta[~chosen]), name
        factor = (0.5 * i_d[name][chosen] / i_f[name][chosen]).clamp(max=1.0)
        assert torch.equal(new[chosen], theta[chosen] * factor), name
    assert result.metrics["n_selected"] == n_selected
    assert all(torch.equal(p, base[n]) for n, p in handle.hf.named_parameters())


@pytest.mark.parametrize(("key", "value"), [("alpha", float("nan")), ("alpha", 0.0), ("dampening", float("inf")),
                                            ("dampening", -1.0), ("batch_size", 0)])
def test_a_value_that_cannot_be_used_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"'params\.{key}'"):
        EDITS.get("ssd").params({key: value})
