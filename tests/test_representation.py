"""Linear CKA's defining properties, and the base-vs-edited comparison on a world model."""

from __future__ import annotations

import pytest
import torch

from audit.representation import (RepresentationConfig, cka_per_layer, compare_representations, linear_cka,
                                  plot_representation)


def _orthogonal(d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    return q


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(100, 24)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


def test_cka_is_invariant_to_orthogonal_maps_isotropic_scaling_and_translation():
    x = torch.randn(150, 20, dtype=torch.float64)
    y = x @ torch.randn(20, 12, dtype=torch.float64) + 0.3 * torch.randn(150, 12, dtype=torch.float64)
    reference = linear_cka(x, y)
    assert 0.2 < reference < 0.99  # a non-trivial pair, so invariance is not 1 == 1
    transformed = 7.5 * x @ _orthogonal(20) + 3.0
    assert linear_cka(transformed, y) == pytest.approx(reference, abs=1e-9)
    assert linear_cka(x, 0.01 * y @ _orthogonal(12)) == pytest.approx(reference, abs=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling():
    # the property that separates CKA from CCA (Kornblith et al. 2019, section 3): a test that could fail
    x = torch.randn(200, 10, dtype=torch.float64)
    stretched = x * torch.tensor([50.0] + [1.0] * 9, dtype=torch.float64)
    assert linear_cka(x, stretched) < 0.9


def test_cka_of_independent_data_is_near_zero_and_shrinks_with_n():
    d = 16
    small = linear_cka(torch.randn(200, d), torch.randn(200, d))
    large = linear_cka(torch.randn(5000, d), torch.randn(5000, d))
    # E[CKA] ≈ d / n for independent isotropic data
    assert small < 3 * d / 200
    assert large < 3 * d / 5000
    assert large < small


def test_cka_per_layer_finds_the_changed_layer():
    base = torch.randn(4, 120, 16)
    edited = base.clone()
    edited[2] = torch.randn(120, 16)
    scores = cka_per_layer(base, edited)
    assert scores[[0, 1, 3]].min() == pytest.approx(1.0, abs=1e-9)
    assert scores[2] < 0.5


def _edited_copy(handle, hooks):
    """A second handle over a deep copy of the model with `hooks` attached permanently (the base is untouched)."""
    import copy
    import dataclasses

    tl = copy.deepcopy(handle.tl)
    for name, hook in hooks:
        tl.add_perma_hook(name, hook)
    return dataclasses.replace(handle, tl=tl)


@pytest.mark.slow
def test_output_suppression_keeps_representations_and_a_residual_shift_changes_them(world_handle, tmp_path):
    from obliviate.hooks import LogitPenalty
    from obliviate.targets import resolve_facts

    targets = resolve_facts("world", split="forget")[:48]
    retain = resolve_facts("world", split="retain")[:240]
    config = RepresentationConfig(include_paraphrases=False)
    penalty = LogitPenalty(tuple(sorted({world_handle.answer_token(f.target_true) for f in targets})), 30.0)
    suppressed = _edited_copy(world_handle, [(penalty.hook_name, penalty)])
    hidden = compare_representations(world_handle, suppressed, targets, retain, config)
    # the penalty acts after the last residual: every depth reads the same, and so do the probes
    assert min(hidden.cka_targets) == pytest.approx(1.0, abs=1e-6)
    assert hidden.probe_edited == hidden.probe_base
    assert max(hidden.probe_base) > hidden.chance + 0.1  # the world model encodes the attribute

    layer = 2
    shift = torch.randn(world_handle.tl.cfg.d_model) * 50.0

    def scramble(x, hook):
        # a per-prompt random shift at one depth destroys the geometry there and downstream
        return x + shift * torch.randn(x.shape[0], 1, 1)

    scrambled = _edited_copy(world_handle, [(f"blocks.{layer}.hook_resid_post", scramble)])
    changed = compare_representations(world_handle, scrambled, targets, retain, config)
    before = layer + 1  # depth of blocks.{layer}.hook_resid_post
    assert min(changed.cka_targets[:before]) == pytest.approx(1.0, abs=1e-6)
    assert max(changed.cka_targets[before:]) < 0.9
    plot = plot_representation(changed, tmp_path / "rep.png")
    assert plot.is_file() and plot.stat().st_size > 1000
