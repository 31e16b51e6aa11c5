"""Interventions: each map does what it promises, is scoped, and survives a save/load round trip."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from obliviate.hooks import (AddVector, AffineErasure, LogitPenalty, applied, attach_permanently,
                             load_interventions, save_interventions)


def _tiny_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_vocab=20, act_fn="gelu",
                                  seed=0)
    return HookedTransformer(cfg)


def test_projector_removes_the_direction_and_is_idempotent():
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    mean = torch.randn(16)
    erase = AffineErasure("blocks.0.hook_resid_post", torch.outer(direction, direction), mean)
    x = torch.randn(2, 5, 16)
    erased = erase(x)
    assert ((erased - mean) @ direction).abs().max() < 1e-5
    assert torch.allclose(erase(erased), erased, atol=1e-5)


def test_interventions_are_scoped_and_leave_no_hook_behind():
    model = _tiny_model()
    tokens = torch.randint(0, 20, (1, 6))
    clean = model(tokens)
    steer = AddVector("blocks.0.hook_resid_post", torch.randn(16), scale=5.0)
    with applied(model, [steer]):
        steered = model(tokens)
    assert (steered - clean).abs().max() > 1e-3
    assert torch.allclose(model(tokens), clean)


def test_logit_penalty_hides_a_token_and_round_trips(tmp_path):
    model = _tiny_model()
    tokens = torch.randint(0, 20, (1, 6))
    top = int(model(tokens)[0, -1].argmax())
    penalty = LogitPenalty((top,), penalty=1e4)
    saved = save_interventions(tmp_path, [penalty, AddVector("blocks.1.hook_resid_post", torch.zeros(16))])
    assert "hooks.json" in saved
    loaded = load_interventions(tmp_path)
    assert loaded[0].token_ids == (top,) and loaded[0].penalty == 1e4
    attach_permanently(model, loaded)
    assert int(model(tokens)[0, -1].argmax()) != top
    model.reset_hooks(including_permanent=True)
    assert int(model(tokens)[0, -1].argmax()) == top
