"""Lenses that do not trust the audited head: the base lens reads any residuals with the base's head (a perturbed
head on the audited model changes nothing), and the tuned lens's translators fitted on the base bring each depth's
read-out closer to the final distribution than the logit lens on text they were not fitted on; the fit is cached."""

from __future__ import annotations

import random

import pytest
import torch

from _locate_tiny import WORDS, tiny_facts, tiny_handle
from audit.attack_result import clone_tl, with_tl
from audit.base_lens import BaseLensConfig, run_base_lens
from audit.logit_lens_attack import lens_probabilities
from audit.tuned_lens import TunedLens, TunedLensConfig, fit_tuned_lens, lens_kl, run_tuned_lens, tuned_lens_for


def _perturbed_head(handle):
    """The same model with its final norm and unembedding perturbed (an edit of the head only)."""
    tl = clone_tl(handle.tl)
    with torch.no_grad():
        tl.ln_final.w.mul_(torch.linspace(0.2, 3.0, tl.cfg.d_model))
        tl.unembed.W_U.add_(torch.randn_like(tl.unembed.W_U) * 5.0)
        tl.unembed.W_U[:, [handle.answer_token(f.target_true) for f in tiny_facts()]] = -50.0
    return with_tl(handle, tl)


def test_base_lens_decodes_with_the_base_head_not_the_audited_one():
    handle = tiny_handle("gpt2")
    edited = _perturbed_head(handle)
    facts = tiny_facts()
    # the perturbed head changes what the model's own lens reads ...
    tokens = handle.to_tokens([f.text for f in facts])
    last = torch.tensor([len(handle.to_tokens(f.text)[0]) - 1 for f in facts])
    assert not torch.allclose(lens_probabilities(edited.tl, tokens, last), lens_probabilities(handle.tl, tokens, last))
    # ... but its residuals are the base's, so the base lens reads exactly what it reads on the base
    on_edited = run_base_lens(handle, edited, facts, config=BaseLensConfig(k=2))
    on_base = run_base_lens(handle, handle, facts, config=BaseLensConfig(k=2))
    assert on_edited.attack == "base_lens"
    assert all(on_edited.targets[c].details == on_base.targets[c].details for c in on_base.targets)
    assert on_edited.recovered == on_base.recovered


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = WORDS[3:]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) for _ in range(n)]


def test_tuned_lens_translators_reduce_kl_on_held_out_text():
    handle = tiny_handle("gpt2")
    fit_on, held_out = _texts(200, 0), _texts(60, 1)
    identity = TunedLens.identity(handle.n_layers, int(handle.tl.cfg.d_model))
    lens, losses = fit_tuned_lens(handle, fit_on, TunedLensConfig(steps=150, lr=3e-3, text_batch=32))
    before, after = lens_kl(handle, identity, held_out), lens_kl(handle, lens, held_out)
    assert losses[-1] < losses[0]
    assert bool((after < before).all()), (before, after)
    assert float(after.sum()) < 0.7 * float(before.sum())
    # zero translators are the logit lens: the identity's read-out is the base head's on the raw residuals
    resid = torch.randn(handle.n_layers + 1, 3, int(handle.tl.cfg.d_model))
    assert torch.equal(identity.translate(resid), resid)


def test_tuned_lens_is_fitted_once_per_base_and_read_from_the_cache(tmp_path, monkeypatch):
    import audit.tuned_lens as tuned

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_handle("gpt2")
    config = TunedLensConfig(steps=5)
    fits = []
    fit = tuned.fit_tuned_lens
    monkeypatch.setattr(tuned, "fit_tuned_lens", lambda *a: fits.append(1) or fit(*a))
    first, info = tuned_lens_for(handle, _texts(20, 0), config)
    again, info_again = tuned_lens_for(handle, _texts(20, 0), config)
    assert len(fits) == 1 and not info["cached"] and info_again["cached"]
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert list(tmp_path.glob("lenses/tuned_*.safetensors"))
    other = _perturbed_head(handle)  # other weights: another lens
    tuned_lens_for(other, _texts(20, 0), config)
    assert len(fits) == 2


def test_tuned_lens_attack_never_fits_on_a_target(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    with pytest.raises(ValueError, match="shares targets"):
        run_tuned_lens(handle, handle, facts[:1], facts, config=TunedLensConfig(steps=2))
    result = run_tuned_lens(handle, handle, facts[:1], facts[1:], oracle=handle, config=TunedLensConfig(steps=2))
    assert result.attack == "tuned_lens" and result.oracle is not None and result.config["lens"]["n_texts"] == 2


def test_a_depth_the_model_does_not_have_is_an_error_naming_both():
    handle = tiny_handle("gpt2")
    with pytest.raises(ValueError, match=r"base_lens: layers asks for block 4, but tiny-gpt2 has blocks 0\.\.3"):
        run_base_lens(handle, handle, tiny_facts(), config=BaseLensConfig(layers=(1, 4)))
