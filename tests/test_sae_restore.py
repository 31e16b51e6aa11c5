"""SAE-feature restoration: α = 0 is the unlearned model, α = 1 on every feature of a lossless SAE is the original
model's activation (so a suppression inside the model is undone exactly), and an output-only edit is untouched."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import answer_stats, clone_tl, with_tl
from audit.sae_restore import SaeRestoreConfig, expert_features, run_sae_restore, sae_restore_scores
from obliviate.hooks import AddVector, LogitPenalty, attach_permanently

HOOK = "blocks.3.hook_resid_post"  # the last block's output: each position's logits depend on it alone


def lossless_sae(d: int, hook_name: str):
    """A sae-lens SAE with features ±e_i: relu(x) − relu(−x) = x, so decode(encode(x)) = x exactly."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = hook_name
    return sae


def _suppressed(handle, facts):
    """Push the residual after the last block away from the answers (a suppression inside the model)."""
    tl = clone_tl(handle.tl)
    push = -handle.tl.W_U[:, [handle.answer_token(f.target_true) for f in facts]].detach().sum(1)
    attach_permanently(tl, [AddVector(HOOK, push, 5.0)])
    return with_tl(handle, tl)


def test_alpha_one_on_all_features_restores_the_original_and_alpha_zero_changes_nothing():
    base = tiny_handle("gpt2")
    facts = tiny_facts()
    edited = _suppressed(base, facts)
    sae = lossless_sae(base.tl.cfg.d_model, HOOK)
    every = {f.case_id: list(range(2 * base.tl.cfg.d_model)) for f in facts}
    outcome = sae_restore_scores(edited, base, sae, facts, SaeRestoreConfig(alphas=(0.0, 1.0), position="last"),
                                 features=every)
    prompts, answers = [f.text for f in facts], [f.target_true for f in facts]
    p_base = answer_stats(base, prompts, answers).p_true
    p_edit = answer_stats(edited, prompts, answers).p_true
    assert not torch.allclose(p_base, p_edit, rtol=1e-2)  # the hook did suppress something
    for i, fact in enumerate(facts):
        assert outcome.variants["alpha=0"][fact.case_id] == pytest.approx(float(p_edit[i]), rel=1e-4)
        assert outcome.variants["alpha=1"][fact.case_id] == pytest.approx(float(p_base[i]), rel=1e-4)


def test_output_only_edit_is_not_restored_and_features_come_from_attribution():
    base = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(base.tl)
    attach_permanently(tl, [LogitPenalty(tuple(base.answer_token(f.target_true) for f in facts), 30.0)])
    edited = with_tl(base, tl)
    sae = lossless_sae(base.tl.cfg.d_model, HOOK)
    features = expert_features(base, sae, facts, 4, position="last")
    assert all(len(v) == 4 for v in features.values())
    result = run_sae_restore(base, edited, facts, sae, oracle=base,
                             config=SaeRestoreConfig(n_features=4, position="last"), features=features)
    plain = answer_stats(edited, [f.text for f in facts], [f.target_true for f in facts]).p_true
    for i, fact in enumerate(facts):
        # z(unlearned) = z(original): every α gives the unlearned model back
        assert result.recovered[fact.case_id] == pytest.approx(float(plain[i]), rel=1e-4, abs=1e-12)
    assert set(result.variants) == {"alpha=1", "alpha=5", "alpha=10"}
    assert result.oracle is not None
