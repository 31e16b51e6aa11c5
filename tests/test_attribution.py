"""Attribution patching: first-order exact for single-site restorations, window = sum of its layers, and on real
models it ranks cells like the exact trace."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _locate_tiny import WORDS, one_thread, tiny_facts, tiny_handle  # noqa: F401 (autouse fixture)

from locate.attribution import AttributionResult, attribution_patch_fact, spearman_agreement
from locate.causal_trace import TraceResult, known_facts, subject_embedding_std, trace_fact
from locate.tokens import fact_subject_tokens


def _known(handle):
    facts = []
    for fact in tiny_facts():
        top = int(handle.tl(handle.to_tokens(fact.text))[0, -1].argmax())
        facts.append(dataclasses.replace(fact, target_true=WORDS[top]))
    return facts


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_atp_is_first_order_exact_for_single_site_restorations(arch, direction):
    """With window 1 every cell restores one site, so the estimate's error must shrink with the noise (∝ std)."""
    handle = tiny_handle(arch, dtype=torch.float64)
    for fact in _known(handle):
        errors = []
        for std in (0.1, 0.01):
            exact = trace_fact(handle, fact, noise_std=std, n_samples=3, window=1)
            atp = attribution_patch_fact(handle, fact, noise_std=std, n_samples=3, window=1, direction=direction)
            assert atp.low == pytest.approx(exact["resid"].low, abs=1e-9)
            for kind in ("resid", "mlp", "attn"):
                scale = exact[kind].indirect_effect.abs().max().item()
                assert scale > 0
                errors.append((atp.effects[kind] - exact[kind].indirect_effect).abs().max().item() / scale)
        large, small = errors[:3], errors[3:]
        assert max(small) < 0.02, small
        assert all(s < 0.3 * l or s < 1e-3 for s, l in zip(small, large)), (large, small)


def test_a_window_estimate_is_the_sum_of_its_layers():
    handle = tiny_handle("llama", n_layers=6)
    fact = _known(handle)[0]
    single = attribution_patch_fact(handle, fact, noise_std=3.0, n_samples=2, window=1)
    wide = attribution_patch_fact(handle, fact, noise_std=3.0, n_samples=2, window=4)
    for kind in ("mlp", "attn"):
        for layer in range(6):
            window = range(max(0, layer - 2), min(6, layer + 2))
            expected = single.effects[kind][:, list(window)].sum(1)
            assert torch.allclose(wide.effects[kind][:, layer], expected, atol=1e-6)
    assert torch.allclose(wide.effects["resid"], single.effects["resid"], atol=1e-7)


def test_positions_before_the_subject_get_no_effect():
    handle = tiny_handle("gpt2")
    fact = _known(handle)[2]  # subject at position 2
    atp = attribution_patch_fact(handle, fact, noise_std=5.0, n_samples=3)
    start = fact_subject_tokens(handle, fact).start
    for kind, effects in atp.effects.items():
        assert effects[:start].abs().max() < 1e-6, kind
        assert effects[start:].abs().max() > 1e-4, kind


def test_atp_with_replacements_starts_from_the_traces_replaced_runs():
    handle = tiny_handle("gpt2")
    fact = _known(handle)[1]  # Big Ben, two tokens
    replacements = [[WORDS.index("Eiffel"), WORDS.index("Tower")], [WORDS.index("Rome"), WORDS.index("city")]]
    atp = attribution_patch_fact(handle, fact, noise_std=0.0, replacements=replacements)
    exact = trace_fact(handle, fact, noise_std=0.0, replacements=replacements, kinds=("resid",))["resid"]
    assert atp.corruption == exact.corruption == "replace" and atp.n_samples == exact.n_samples == 2
    assert atp.low == pytest.approx(exact.low, abs=1e-6) and atp.high == pytest.approx(exact.high, abs=1e-6)
    # restoring the last layer's output at the last position gives back the clean run exactly
    last = len(exact.tokens) - 1
    assert exact.scores[last, -1].item() == pytest.approx(exact.high, abs=1e-5)


def _fake_trace(effect: torch.Tensor) -> TraceResult:
    return TraceResult(case_id=0, kind="mlp", scores=0.2 + effect, low=0.2, high=0.9, tokens=["a"] * effect.shape[0],
                       subject_range=(1, 2), answer="x", answer_token=0, window=10, n_samples=10, noise_std=1.0,
                       seed=0)


def test_spearman_agreement_reads_rank_order():
    exact = torch.arange(12.0).reshape(3, 4) / 20
    atp = AttributionResult(case_id=0, effects={"mlp": exact ** 3, "attn": -exact}, low=0.2, high=0.9,
                            tokens=["a"] * 3, subject_range=(1, 2), answer="x", answer_token=0, window=10,
                            n_samples=10, noise_std=1.0, seed=0, direction="denoise")
    rho = spearman_agreement(atp, {"mlp": _fake_trace(exact), "attn": _fake_trace(exact)})
    assert rho["mlp"] == pytest.approx(1.0)
    assert rho["attn"] == pytest.approx(-1.0)
    partial = _fake_trace(exact)
    partial.scores[0, 0] = float("nan")  # untraced cells are left out, not compared
    assert spearman_agreement(atp, {"mlp": partial})["mlp"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_atp_ranks_cells_like_the_exact_trace(smollm2_handle):
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    facts = resolve_facts("smollm2")
    known, _ = known_facts(handle, facts[:20])
    fact = known[0]
    std = 3 * subject_embedding_std(handle, facts)
    subject = fact_subject_tokens(handle, fact)
    positions = sorted({subject.start, subject.last, -1 % len(subject.token_ids)})
    exact = trace_fact(handle, fact, noise_std=std, kinds=["resid", "mlp"], positions=positions, n_samples=5)
    atp = attribution_patch_fact(handle, fact, noise_std=std, kinds=["resid", "mlp"], n_samples=5)
    assert atp.low == pytest.approx(exact["mlp"].low, abs=1e-5)
    rho = spearman_agreement(atp, exact)
    assert rho["mlp"] > 0.3 and rho["resid"] > 0.3, rho


@pytest.mark.slow
def test_world_atp_ranks_cells_like_the_exact_trace(world_handle):
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world")[:40]
    known, _ = known_facts(world_handle, facts)
    fact = known[0]
    std = 3 * subject_embedding_std(world_handle, facts)
    exact = trace_fact(world_handle, fact, noise_std=std)
    atp = attribution_patch_fact(world_handle, fact, noise_std=std)
    rho = spearman_agreement(atp, exact, from_subject=True)
    assert all(r > 0 for r in rho.values()), rho
