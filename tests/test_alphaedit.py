"""AlphaEdit: P projects onto the null space of the preserved keys, the update leaves those keys' outputs alone yet
still writes the edited facts, sequential batches protect the earlier batches' keys, and bad input names its key."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.alphaedit import (AlphaEditConfig, NullSpaceEditor, alphaedit_edits, fact_keys, null_space_projection,
                            without_span)
from edit.covariance import CovarianceConfig, corpus_texts, packed_rows
from edit.deltas import apply_deltas, sequential_edits
from edit.memit import memit_templates
from edit.result import EditRequest, run_method
from edit.sites import edit_site
from obliviate.config import ConfigError
from obliviate.facts import Fact
from obliviate.metrics import target_nll
from obliviate.registry import EDITS

LAYER = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def handle():
    return tiny_hf_handle("gpt2")


def tiny_cfg(corpus, n_tokens: int = 40, **kwargs) -> AlphaEditConfig:
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=n_tokens, seq_len=24, cache=False)
    return AlphaEditConfig(covariance=cov, context_lengths=[(6, 3)], steps=15, **kwargs)


def preserved_keys(handle, corpus, n_tokens: int = 40) -> torch.Tensor:
    """Down-projection inputs at LAYER on the first `n_tokens` corpus tokens: fewer than d_mlp = 128, so they leave
    a null space of known size."""
    rows = packed_rows(handle, corpus_texts(handle, str(corpus)), 24)
    tokens = torch.tensor([next(rows), next(rows)])
    hook = edit_site(handle, LAYER).key_hook
    _, cache = handle.tl.run_with_cache(tokens, names_filter=[hook])
    return cache[hook].reshape(-1, cache[hook].shape[-1])[:n_tokens].double()


def output_change(keys: torch.Tensor, delta: torch.Tensor) -> float:
    """‖K Δ‖ / ‖K‖: how far the update moves the down-projection's output on these keys, per unit of key."""
    return float((keys.double() @ delta.double()).norm() / keys.norm())


def test_projection_is_symmetric_idempotent_and_spans_exactly_the_small_eigenvectors():
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=generator, dtype=torch.float64))
    eigenvalues = torch.cat([torch.linspace(1.0, 10.0, 15), torch.full((9,), 1e-6)]).double()
    moment = q @ torch.diag(eigenvalues) @ q.T
    p = null_space_projection(moment, 1e-3)
    assert torch.allclose(p, p.T, atol=1e-12)
    assert torch.allclose(p @ p, p, atol=1e-10)
    small = q[:, 15:]
    assert torch.allclose(p, small @ small.T, atol=1e-9)  # exactly the eigenvectors below the threshold
    assert round(float(p.trace())) == 9
    assert float((p @ moment).norm()) < 1e-5 * float(moment.norm())
    # a larger threshold takes in directions the moment does use
    assert round(float(null_space_projection(moment, 5.0).trace())) > 9


def test_the_energy_rule_takes_the_smallest_directions_up_to_a_share_of_the_trace_whatever_the_scale():
    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=generator, dtype=torch.float64))
    eigenvalues = torch.cat([torch.full((9,), 1e-6), torch.linspace(1.0, 10.0, 15)]).double()  # trace ≈ 82.5
    moment = q @ torch.diag(eigenvalues) @ q.T
    # 0.1% of the trace holds the 9 tiny directions only; 2% also the eigenvalue 1.0 (1.00001 / 82.5 = 1.2%)
    assert torch.allclose(null_space_projection(moment, energy=1e-3), q[:, :9] @ q[:, :9].T, atol=1e-9)
    assert round(float(null_space_projection(moment, energy=2e-2).trace())) == 10
    for scale in (1e-3, 1e3):  # the same directions at any key scale; the absolute threshold's change
        assert torch.allclose(null_space_projection(scale * moment, energy=2e-2),
                              null_space_projection(moment, energy=2e-2), atol=1e-9)
    assert round(float(null_space_projection(1e3 * moment, 2.0).trace())) == 9
    assert round(float(null_space_projection(1e-3 * moment, 2.0).trace())) == 24
    with pytest.raises(ValueError, match="one of"):
        null_space_projection(moment, 1e-3, energy=1e-3)


def test_the_editor_with_an_energy_share_keeps_the_null_space_under_it(handle, corpus):
    cfg = tiny_cfg(corpus, n_tokens=200, nullspace_energy=0.01)
    editor = NullSpaceEditor(handle, [0, LAYER], cfg)
    for layer in (0, LAYER):
        assert 0 < editor.summary[f"null_energy_L{layer}"] <= 0.01
        assert 0 < editor.summary[f"null_dims_L{layer}"] < 128


def test_the_update_leaves_preserved_keys_alone_and_still_writes_the_facts(handle, corpus):
    keys0 = preserved_keys(handle, corpus)
    moment = keys0.T @ keys0 / len(keys0)
    p = null_space_projection(moment, 1e-6 * float(torch.linalg.eigvalsh(moment).max()))
    assert 128 - 40 <= round(float(p.trace())) < 128
    facts = tiny_facts()
    cfg = tiny_cfg(corpus, l2=1e-2)
    result = NullSpaceEditor(handle, [LAYER], cfg, projections={LAYER: p})(facts, "rewrite")
    delta, edited_keys = result.deltas[f"blocks.{LAYER}.mlp.W_out"], result.vectors[f"keys_L{LAYER}"]
    assert output_change(keys0, delta) < 1e-6 * output_change(edited_keys, delta)
    # the same solve with nothing projected away moves the preserved keys' outputs: the check can fail
    free = NullSpaceEditor(handle, [LAYER], cfg, projections={LAYER: torch.eye(p.shape[0])})(facts, "rewrite")
    free_delta = free.deltas[f"blocks.{LAYER}.mlp.W_out"]
    assert output_change(keys0, free_delta) > 0.05 * output_change(edited_keys, free_delta)
    # and the projected edit still moves each edited fact towards its new answer
    texts, news = [f.text for f in facts], [f.target_new for f in facts]
    before = target_nll(handle, texts, news)
    with apply_deltas(handle, result.deltas):
        after = target_nll(handle, texts, news)
    assert bool((after < before - 0.1).all()), (before, after)


def test_the_registered_method_confines_the_update_to_the_corpus_null_space(handle, corpus):
    cfg = tiny_cfg(corpus, layers=[0, 1])
    result = run_method("alphaedit", handle, EditRequest(targets=tiny_facts()[:2], goal="rewrite"), cfg)
    assert result.layers == [0, 1] and result.changed
    editor = NullSpaceEditor(handle, [0, 1], cfg)  # P from the same corpus statistics the method used
    for layer in (0, 1):
        delta = result.deltas[f"blocks.{layer}.mlp.W_out"].double()
        assert float((editor.projections[layer] @ delta - delta).norm()) < 1e-4 * float(delta.norm())
        assert result.metrics[f"null_dims_L{layer}"] >= 128 - 40
        assert 0 <= result.metrics[f"null_energy_L{layer}"] < 1e-3


def test_removing_a_span_leaves_the_projector_onto_what_is_orthogonal_to_it_inside_p():
    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=generator, dtype=torch.float64))
    p = q[:, :12] @ q[:, :12].T
    keys = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    keys = torch.cat([keys, keys[:1] + 2 * keys[1:2]])  # a dependent row: rank 3
    out = without_span(p, keys)
    assert torch.allclose(out @ out, out, atol=1e-10) and torch.allclose(out, out.T)
    assert round(float(out.trace())) == 12 - 3
    assert float((keys @ out).abs().max()) < 1e-10  # no kept key can see the update's range
    assert torch.allclose(p @ out, out, atol=1e-10)  # and the range stays inside P's
    assert torch.allclose(without_span(p, q[:, 12:].T), p, atol=1e-10)  # keys outside P's range change nothing


def test_kept_facts_keys_see_no_change_while_the_edit_still_writes(handle, corpus):
    facts = tiny_facts()
    kept, edited = facts[:1], facts[1:]
    cfg = tiny_cfg(corpus, l2=1e-2, preserve_retain_keys=True, layers=[LAYER])
    same_subject = Fact(case_id=9, prompt="{} was built by", subject="Big Ben", target_true="Barry",
                        target_new="Eiffel")  # shares an edited fact's key: it cannot be kept, so it is dropped
    result = run_method("alphaedit", handle, EditRequest(targets=edited, retain=[*kept, same_subject],
                                                         goal="rewrite"), cfg)
    keys = fact_keys(handle, LAYER, kept, memit_templates(handle, cfg))
    name = f"blocks.{LAYER}.mlp.W_out"
    delta = result.deltas[name]
    plain = run_method("alphaedit", handle, EditRequest(targets=edited, retain=kept, goal="rewrite"),
                       tiny_cfg(corpus, l2=1e-2, layers=[LAYER]))
    assert output_change(keys, plain.deltas[name]) > 1e3 * output_change(keys, delta)  # the check can fail
    assert result.metrics["n_preserved_facts"] == 1
    assert result.metrics[f"null_dims_L{LAYER}"] == plain.metrics[f"null_dims_L{LAYER}"] - 2
    texts, news = [f.text for f in edited], [f.target_new for f in edited]
    before = target_nll(handle, texts, news)
    with apply_deltas(handle, result.deltas):
        after = target_nll(handle, texts, news)
    assert bool((after < before - 0.1).all()), (before, after)
    with pytest.raises(ConfigError, match="preserve_retain_keys"):
        run_method("alphaedit", handle, EditRequest(targets=edited, goal="rewrite"), cfg)


def test_sequential_batches_keep_the_earlier_batches_keys(handle, corpus):
    """P = I isolates the K_p K_pᵀ term: without it the second batch would move the first batch's outputs."""
    facts = tiny_facts()
    cfg = tiny_cfg(corpus, l2=1e-2)
    identity = {LAYER: torch.eye(128)}
    editor = NullSpaceEditor(handle, [LAYER], cfg, projections=identity)
    (_, first), (_, second) = list(sequential_edits(handle, [facts[:2], facts[2:]], lambda b: editor(b, "rewrite")))
    # the second batch solved without the first batch's keys, on the same model (first batch applied)
    with apply_deltas(handle, first.deltas):
        forgetful = NullSpaceEditor(handle, [LAYER], cfg, projections=identity)(facts[2:], "rewrite")
    name, key = f"blocks.{LAYER}.mlp.W_out", f"keys_L{LAYER}"
    first_keys, second_keys = first.vectors[key], second.vectors[key]
    kept, disturbed = output_change(first_keys, second.deltas[name]), output_change(first_keys, forgetful.deltas[name])
    assert disturbed > 0.1 * output_change(second_keys, forgetful.deltas[name])  # there was something to keep
    assert kept < 0.01 * disturbed, (kept, disturbed)
    # and the second batch still writes its own facts as strongly
    assert output_change(second_keys, second.deltas[name]) > 0.9 * output_change(second_keys, forgetful.deltas[name])
    assert torch.allclose(editor.edited[LAYER], sum(r.vectors[key].double().T @ r.vectors[key].double()
                                                    for r in (first, second)))


@pytest.mark.parametrize("value", [0, -0.5, float("nan")])
def test_a_null_space_threshold_that_is_not_positive_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"edits\[0\]\.params\.nullspace_threshold"):
        EDITS.get("alphaedit").params({"nullspace_threshold": value}, where="edits[0].params")
    with pytest.raises(ConfigError, match="nullspace_threshold"):
        null_space_projection(torch.eye(4), value)


@pytest.mark.parametrize("value", [0, 1, 1.5, float("nan")])
def test_a_null_space_energy_outside_zero_one_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"edits\[0\]\.params\.nullspace_energy"):
        EDITS.get("alphaedit").params({"nullspace_energy": value}, where="edits[0].params")


def test_a_layer_the_model_lacks_and_an_empty_null_space_are_refused_naming_the_key(handle, corpus):
    facts = tiny_facts()[:1]
    with pytest.raises(ConfigError, match=r"'layers'.*0\.\.2"):
        run_method("alphaedit", handle, EditRequest(targets=facts, layers=[2, 3]), tiny_cfg(corpus))
    with pytest.raises(ConfigError, match="'nullspace_threshold'.*empty"):
        alphaedit_edits(handle, facts, [LAYER], tiny_cfg(corpus), projections={LAYER: torch.zeros(128, 128)})
    with pytest.raises(ConfigError, match="edits_per_batch"):
        EDITS.get("alphaedit").params({"edits_per_batch": 0})


def test_c_without_the_edited_subjects_is_the_statistic_the_edit_is_confined_by(handle, tmp_path):
    """`c_without_edited_subjects` reads C from the corpus without the targets' subjects, and the update lies in that
    C's null space, not in the one of the corpus as it is."""
    random_text = tiny_corpus(tmp_path / "random.txt", n=40).read_text().split("\n\n")
    corpus = tmp_path / "named.txt"  # every other paragraph names the edited subject
    corpus.write_text("\n\n".join(p for text in random_text for p in (text, "I saw Big Ben")))
    edited = [tiny_facts()[1]]  # Big Ben
    cfg = tiny_cfg(corpus, n_tokens=96, l2=1e-2, layers=[LAYER])
    plain = NullSpaceEditor(handle, [LAYER], cfg)
    freed = NullSpaceEditor(handle, [LAYER], cfg, exclude_subjects=["Big Ben"])
    result = run_method("alphaedit", handle, EditRequest(targets=edited, goal="rewrite"),
                        replace(cfg, c_without_edited_subjects=True))
    assert result.metrics["n_subjects_out_of_c"] == 1 and "n_subjects_out_of_c" not in plain.summary
    both = NullSpaceEditor(handle, [LAYER], replace(cfg, covariance=replace(cfg.covariance, exclude_subjects=("I",))),
                           exclude_subjects=["Big Ben"])
    assert both.summary["n_subjects_out_of_c"] == 2  # the config's exclusions are kept beside the edited subjects
    delta = result.deltas[f"blocks.{LAYER}.mlp.W_out"].double()
    assert float((freed.projections[LAYER] @ delta - delta).norm()) < 1e-4 * float(delta.norm())
    assert float((plain.projections[LAYER] @ delta - delta).norm()) > 1e-2 * float(delta.norm())  # can fail


def test_on_the_world_c_without_the_edited_subjects_gives_their_keys_back_and_keeps_the_others(world_handle):
    """The world model keeps its facts at the subject (world v3): with every subject named in C, the null space
    hides the edited subjects' keys as well as the kept ones'; leaving the edited subjects out of C opens their keys
    to the update (their share inside P at least 1.5×) while the other subjects' keys stay as hidden as before."""
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world")
    subjects = sorted({f.subject for f in facts})
    edited = [f for f in facts if f.subject in subjects[:20]][:60]
    kept = [f for f in facts if f.subject in subjects[20:40]][:60]
    cfg = AlphaEditConfig(covariance=CovarianceConfig(corpus="world-mentions", n_tokens=20_000, cache=False))
    plain = NullSpaceEditor(world_handle, [1, 2], cfg)
    freed = NullSpaceEditor(world_handle, [1, 2], cfg, exclude_subjects=subjects[:20])
    templates = memit_templates(world_handle, cfg)
    for layer in (1, 2):
        share = {}
        for name, group in (("edited", edited), ("kept", kept)):
            keys = fact_keys(world_handle, layer, group, templates).double()
            share[name] = [float((keys @ e.projections[layer]).norm() / keys.norm()) for e in (plain, freed)]
        assert share["edited"][1] > 1.5 * share["edited"][0], (layer, share)  # measured 0.25 → 0.51, 0.16 → 0.60
        assert share["kept"][1] <= share["kept"][0] + 0.01, (layer, share)  # measured 0.26 → 0.23, 0.24 → 0.20
