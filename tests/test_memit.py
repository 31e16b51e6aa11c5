"""MEMIT: the least-squares update writes the residuals for the keys, never leaks state, and erases on the world."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.covariance import CovarianceConfig
from edit.deltas import apply_deltas
from edit.memit import MemitConfig, memit_edit
from edit.sites import edit_site, post_norm, weight_output_change
from obliviate.config import from_dict


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def tiny_cfg(corpus, **kwargs) -> MemitConfig:
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=1500, seq_len=24, cache=False, ridge=0.0)
    return MemitConfig(covariance=cov, context_lengths=[(6, 3)], **kwargs)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_with_little_preservation_the_keys_map_onto_the_residuals(arch, corpus):
    handle = tiny_hf_handle(arch)
    result = memit_edit(handle, tiny_facts(), [1], tiny_cfg(corpus, mom2_update_weight=1e-6), goal="rewrite")
    keys, residual = result.vectors["keys_L1"], result.vectors["residual_L1"]
    delta_w = result.deltas["blocks.1.mlp.W_out"]
    assert torch.allclose(keys @ delta_w, residual, atol=1e-3 * residual.norm())
    # with a heavy preservation weight the same batch barely moves the weights
    heavy = memit_edit(handle, tiny_facts(), [1], tiny_cfg(corpus, mom2_update_weight=1e6), goal="rewrite")
    assert heavy.deltas["blocks.1.mlp.W_out"].norm() < 0.1 * delta_w.norm()


def test_behind_a_post_mlp_norm_the_residual_share_is_mapped_through_the_norm():
    """Gemma's MLP output reaches the residual through an RMSNorm: the change of the projection's own output that
    MEMIT writes must move the normed output by the wanted share (to first order), and the identity elsewhere."""
    handle = tiny_hf_handle("gemma3")
    site = edit_site(handle, 1)
    torch.manual_seed(0)
    own = torch.randn(4, handle.tl.cfg.d_model) * 3
    wanted = torch.randn(4, handle.tl.cfg.d_model) * 1e-3
    change = weight_output_change(handle.tl, site, wanted, own)
    moved = post_norm(handle.tl, site, own + change) - post_norm(handle.tl, site, own)
    # the norm is scale-invariant, so the one direction w ⊙ x̂ cannot be made; everything else is
    w = handle.tl.blocks[1].ln2_post.w.detach()
    unit = own / own.norm(dim=-1, keepdim=True)
    makeable = wanted - w * unit * (unit * wanted / w).sum(-1, keepdim=True)
    assert torch.allclose(moved, makeable, atol=1e-2 * float(wanted.norm(dim=-1).min())), (moved - makeable).norm()
    assert (torch.nn.functional.cosine_similarity(moved, wanted, dim=-1) > 0.8).all()
    plain = edit_site(tiny_hf_handle("llama"), 1)
    assert plain.out_norm is None and torch.equal(weight_output_change(handle.tl, plain, wanted, None), wanted)


def test_residual_is_spread_over_the_remaining_layers(corpus):
    handle = tiny_hf_handle("gpt2")
    result = memit_edit(handle, tiny_facts(), [0, 1, 2], tiny_cfg(corpus), goal="rewrite")
    assert set(result.deltas) == {f"blocks.{i}.mlp.W_out" for i in range(3)}
    z, first = result.vectors["z"], result.vectors["residual_L0"]
    # the first layer gets a third of the full gap between z and the unedited residual
    assert torch.allclose(3 * first, z - result.vectors["z_init"], atol=1e-4 * z.norm())


def test_sequential_calls_with_restore_give_identical_results(corpus):
    handle = tiny_hf_handle("llama")
    before = {k: v.clone() for k, v in handle.tl.state_dict().items()}
    cfg = tiny_cfg(corpus)
    first = memit_edit(handle, tiny_facts(), [0, 1], cfg, goal="rewrite")
    with apply_deltas(handle, first.deltas):
        pass
    second = memit_edit(handle, tiny_facts(), [0, 1], cfg, goal="rewrite")
    for name in first.deltas:
        assert torch.equal(first.deltas[name], second.deltas[name])
    for key, value in handle.tl.state_dict().items():
        assert torch.equal(value, before[key]), key
    # an edit computed on top of the first one differs: the deltas really were applied in between
    with apply_deltas(handle, first.deltas):
        stacked = memit_edit(handle, tiny_facts(), [0, 1], cfg, goal="rewrite")
    assert not torch.equal(stacked.deltas["blocks.1.mlp.W_out"], first.deltas["blocks.1.mlp.W_out"])


def test_one_z_per_subject_gives_a_subjects_facts_one_value_and_leaves_single_facts_alone(corpus):
    from obliviate.facts import Fact

    handle = tiny_hf_handle("gpt2")
    facts = [*tiny_facts(), Fact(case_id=3, prompt="{} can be found in the city of", subject="Eiffel Tower",
                                 target_true="Paris", target_new="London")]
    # one fact per batch: the two Eiffel Tower facts must still be optimised together
    # (rewrite: on a random tiny model every true answer is already improbable, so erase has nothing to optimise)
    tied = memit_edit(handle, facts, [1], tiny_cfg(corpus, one_z_per_subject=True, facts_per_batch=1),
                      goal="rewrite")
    free = memit_edit(handle, facts, [1], tiny_cfg(corpus), goal="rewrite")
    shift, free_shift = tied.vectors["z"] - tied.vectors["z_init"], free.vectors["z"] - free.vectors["z_init"]
    # z − z_init gives back the shared δ up to rounding ((init + δ) − init)
    assert torch.allclose(shift[0], shift[3], atol=1e-5) and not torch.allclose(free_shift[0], free_shift[3])
    assert not torch.allclose(shift[0], free_shift[0])  # the shared value answers to both facts' losses
    for single in (1, 2):  # a subject with one fact gets the value it gets untied
        assert torch.allclose(shift[single], free_shift[single], atol=1e-4 * float(free_shift[single].norm()))
    assert len(tied.losses) == 4 and tied.losses[0] == tied.losses[3]  # one curve per fact, shared by the tie


def test_layers_must_be_contiguous(corpus):
    handle = tiny_hf_handle("gpt2")
    with pytest.raises(ValueError, match="contiguous"):
        memit_edit(handle, tiny_facts(), [0, 2], tiny_cfg(corpus))


def test_config_loads_from_edit_params():
    cfg = from_dict(MemitConfig, {"layers": [1, 2], "mom2_update_weight": 5000,
                                  "covariance": {"n_tokens": 1234}})
    assert cfg.layers == [1, 2] and cfg.mom2_update_weight == 5000 and cfg.covariance.n_tokens == 1234


def test_lambda_scales_with_the_mlp_width_unless_set(corpus):
    """λ = mom2_per_d_mlp × d_mlp by default (GPT-J's 15 000 per 16 384 dimensions), the configured value otherwise;
    the result records the λ it solved with."""
    handle = tiny_hf_handle("gpt2")
    d_mlp = handle.tl.cfg.d_mlp
    scaled = memit_edit(handle, tiny_facts(), [1], tiny_cfg(corpus), goal="rewrite")
    assert scaled.config["mom2_weight_used"] == pytest.approx(15000 / 16384 * d_mlp)
    fixed = memit_edit(handle, tiny_facts(), [1], tiny_cfg(corpus, mom2_update_weight=5000.0), goal="rewrite")
    assert fixed.config["mom2_weight_used"] == 5000.0


# MEMIT's erase on a real model (SmolLM2, 16 known facts at layers 3-6: all recalled before, at most half after,
# retain recall within 3pp, the true answers' NLL up by more than a nat on average) is asserted in
# notebooks/02_edit.ipynb, which CI runs: the same edit computed twice per run cost about a minute.
