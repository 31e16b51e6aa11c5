"""The benchmark's reference ROME reaches the workbench's δ and ΔW, so its speed ratio compares like with like."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.covariance import CovarianceConfig, second_moment
from edit.rome import RomeConfig, rome_edit, rome_templates

_ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("rome_reference", _ROOT / "bench" / "rome_reference.py")
rome_reference = importlib.util.module_from_spec(_SPEC)
sys.modules["rome_reference"] = rome_reference  # dataclasses look their module up while the class is built
_SPEC.loader.exec_module(rome_reference)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reference_loop_reaches_the_workbenchs_delta_and_update(arch, corpus):
    handle = tiny_hf_handle(arch)
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=1500, seq_len=24, cache=False)
    # the reference divides by the bare prompt's key: compare with the workbench in that mode
    cfg = RomeConfig(covariance=cov, context_lengths=[(5, 3), (10, 3)], steps=6, consistent_keys=False)
    templates = rome_templates(handle, cfg)
    c_inverse = rome_reference.inverse_moment(second_moment(handle, 1, cov), cov.ridge)
    before = {k: v.clone() for k, v in handle.hf.state_dict().items()}
    flags = [p.requires_grad for p in handle.hf.parameters()]
    for fact in tiny_facts()[:2]:
        ours = rome_edit(handle, fact, 1, cfg, templates=templates)
        theirs = rome_reference.reference_rome(handle, fact, 1, cfg, templates, c_inverse)
        assert len(theirs.losses) == ours.metrics["steps"]
        assert theirs.losses == pytest.approx(ours.losses[0], rel=1e-3, abs=1e-4)
        assert torch.allclose(theirs.delta, ours.vectors["delta"], atol=1e-3 * float(ours.vectors["delta"].norm()))
        expected = ours.deltas[theirs.weight]
        assert torch.allclose(theirs.delta_w, expected, atol=1e-3 * float(expected.abs().max()))
    after = handle.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the reference edit must not change the model"
    assert [p.requires_grad for p in handle.hf.parameters()] == flags, "requires_grad flags are restored"


def test_reference_refuses_a_post_norm_model(corpus):
    handle = tiny_hf_handle("gemma3")
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=1500, seq_len=24, cache=False)
    with pytest.raises(ValueError, match="post-MLP norm"):
        rome_reference.reference_rome(handle, tiny_facts()[0], 1, RomeConfig(covariance=cov), [["{}"]],
                                      torch.eye(handle.tl.cfg.d_mlp))
