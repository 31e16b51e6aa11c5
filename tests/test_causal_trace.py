"""Causal tracing: the batched trace equals ROME's one-cell-per-forward version, noise touches the subject only,
known facts are traced and the others reported, and on real models restoring clean states raises p(answer)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _locate_tiny import WORDS, one_thread, tiny_facts, tiny_handle  # noqa: F401 (autouse fixture)

from locate.causal_trace import (CorruptedRuns, TraceReport, TraceResult, corrupted_runs, corruption_noise,
                                 known_facts, replacement_subjects, subject_embedding_std, trace_fact, trace_facts,
                                 window_layers)
from locate.causal_trace_reference import reference_trace_fact
from locate.tokens import SubjectNotFoundError, fact_subject_tokens, text_subject_tokens
from obliviate.facts import Fact
from obliviate.results import to_jsonable


def _known_tiny_facts(handle) -> list[Fact]:
    """The tiny facts with target_true set to the random model's own top-1 (so they are 'known')."""
    facts = []
    for fact in tiny_facts():
        top = int(handle.tl(handle.to_tokens(fact.text))[0, -1].argmax())
        facts.append(dataclasses.replace(fact, target_true=WORDS[top]))
    return facts


# ---------------------------------------------------------------------------------------------- subject tokens


@pytest.mark.parametrize("prepend_bos", [False, True])
def test_subject_tokens_cover_exactly_the_subject_words(prepend_bos):
    handle = tiny_handle("gpt2", prepend_bos=prepend_bos)
    shift = int(prepend_bos)
    eiffel, big_ben, colosseum = tiny_facts()
    for fact, (start, end) in ((eiffel, (1, 3)), (big_ben, (0, 2)), (colosseum, (2, 3))):
        span = fact_subject_tokens(handle, fact)
        assert (span.start, span.end) == (start + shift, end + shift)
        words = [WORDS[i] for i in span.token_ids[span.start:span.end]]
        assert " ".join(words) == fact.subject
        assert span.token_ids == handle.to_tokens(fact.text)[0].tolist()


@pytest.mark.smollm2
def test_subject_tokens_with_a_real_bpe_tokenizer_keep_the_leading_space_token(smollm2_handle):
    span = text_subject_tokens(smollm2_handle, "The Eiffel Tower is located in the city of", "Eiffel Tower")
    pieces = [smollm2_handle.tokenizer.decode([i]) for i in span.token_ids[span.start:span.end]]
    assert "".join(pieces).strip() == "Eiffel Tower"
    assert span.start >= 1  # "The" is not part of the subject


def test_a_missing_subject_is_a_clear_error_naming_it():
    handle = tiny_handle("gpt2")
    with pytest.raises(SubjectNotFoundError, match="Notre Dame"):
        text_subject_tokens(handle, "The Eiffel Tower is in the city of", "Notre Dame")
    # an escaped "{{}}" before the slot: the first "{}" in the template is not where the subject lands
    broken = Fact(case_id=41, prompt="{{}} {} is in the city of", subject="Eiffel Tower", target_true="Paris",
                  target_new="Rome")
    with pytest.raises(SubjectNotFoundError, match="fact 41"):
        fact_subject_tokens(handle, broken)


# ---------------------------------------------------------------------------------------------- noise


def test_noise_is_seeded_per_fact_and_scaled():
    a = corruption_noise(10, 3, 64, 2.0, seed=0, case_id=5)
    assert torch.equal(a, corruption_noise(10, 3, 64, 2.0, seed=0, case_id=5))
    assert not torch.equal(a, corruption_noise(10, 3, 64, 2.0, seed=0, case_id=6))
    assert not torch.equal(a, corruption_noise(10, 3, 64, 2.0, seed=1, case_id=5))
    assert abs(a.std().item() - 2.0) < 0.15


def test_subject_embedding_std_is_the_std_of_the_subject_embeddings():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    ids = [handle.tokenizer(f.subject, add_special_tokens=False)["input_ids"] for f in facts]
    expected = torch.cat([handle.tl.W_E[i] for i in ids]).std().item()
    assert subject_embedding_std(handle, facts) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_corruption_changes_the_subject_and_what_follows_only(arch):
    handle = tiny_handle(arch)
    fact = tiny_facts()[2]  # subject at position 2: positions 0 and 1 precede it
    runs: CorruptedRuns = corrupted_runs(handle, fact, noise_std=5.0, n_samples=4)
    start = runs.subject.start
    for layer in range(handle.n_layers):
        clean = runs.clean["resid"][layer]
        corrupt = runs.corrupt_resid_pre[layer + 1]  # = the corrupted resid_post of `layer`
        assert torch.allclose(corrupt[:, :start], clean[None, :start].expand_as(corrupt[:, :start]), atol=1e-5)
        assert (corrupt[:, start] - clean[start]).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_replacement_corruption_is_the_clean_run_of_the_replaced_prompt(arch):
    handle = tiny_handle(arch, prepend_bos=arch == "llama")
    eiffel, big_ben, _ = tiny_facts()
    replacements = replacement_subjects(handle, big_ben, tiny_facts(), 5)
    assert len(replacements) == 1  # Eiffel Tower (2 tokens, another answer); Colosseum has 1 token
    runs = corrupted_runs(handle, big_ben, noise_std=123.0, replacements=replacements)  # noise_std unused
    assert runs.noise.shape[0] == 1
    swapped = handle.to_tokens(big_ben.prompt.format(eiffel.subject))
    _, cache = handle.tl.run_with_cache(swapped)
    for layer in range(handle.n_layers):
        assert torch.allclose(runs.corrupt_resid_pre[layer + 1][0], cache[f"blocks.{layer}.hook_resid_post"][0],
                              atol=1e-4)
    p = handle.tl(swapped)[0, -1].softmax(-1)[handle.answer_token(big_ben.target_true)].item()
    assert runs.low == pytest.approx(p, abs=1e-6)


def test_replacements_keep_the_prompt_and_the_relation_and_change_the_answer():
    handle = tiny_handle("gpt2")
    eiffel, big_ben, colosseum = tiny_facts()
    same_answer = dataclasses.replace(eiffel, case_id=7, target_true=big_ben.target_true)
    with pytest.raises(ValueError, match="no subject in the pool"):
        replacement_subjects(handle, big_ben, [same_answer, colosseum], 5)  # same answer / one token: no stand-in
    other_relation = dataclasses.replace(eiffel, relation_id="P17")
    with pytest.raises(ValueError, match="no subject in the pool"):
        replacement_subjects(handle, dataclasses.replace(big_ben, relation_id="P276"), [other_relation], 5)
    ids = replacement_subjects(handle, big_ben, [eiffel, big_ben], 5)
    assert [[WORDS[i] for i in row] for row in ids] == [["Eiffel", "Tower"]]


def test_window_is_romes_clipped_ten_layer_window():
    assert list(window_layers(0, 30, 10)) == [0, 1, 2, 3, 4]
    assert list(window_layers(12, 30, 10)) == list(range(7, 17))
    assert list(window_layers(29, 30, 10)) == list(range(24, 30))
    assert list(window_layers(3, 30, 1)) == [3]


# ---------------------------------------------------------------------------------------------- batched = reference


@pytest.mark.parametrize(("arch", "prepend_bos"), [("gpt2", False), ("llama", True)])
@pytest.mark.parametrize("corruption", ["noise", "replace"])
def test_batched_trace_equals_the_one_cell_per_forward_reference(arch, prepend_bos, corruption):
    handle = tiny_handle(arch, prepend_bos=prepend_bos, n_layers=5)
    facts = _known_tiny_facts(handle)
    std = 3 * subject_embedding_std(handle, facts)
    # subject first (no prefix to cache) with a clipped window; subject mid-prompt with an interior window
    for fact, window in ((facts[1], 10), (facts[2], 3)):
        replacements = None
        if corruption == "replace":  # stand-ins of the subject's length: any word sequences will do here
            n = len(handle.tokenizer(fact.subject, add_special_tokens=False)["input_ids"])
            replacements = [[WORDS.index(w) for w in words[:n]] for words in (["Rome", "Paris"], ["city", "a"])]
        batched = trace_fact(handle, fact, noise_std=std, n_samples=3, window=window, max_rows=7,
                             replacements=replacements)
        reference = reference_trace_fact(handle, fact, noise_std=std, n_samples=3, window=window,
                                         replacements=replacements)
        for kind in ("resid", "mlp", "attn"):
            got, want = batched[kind], reference[kind]
            assert got.low == pytest.approx(want.low, abs=1e-6)
            assert got.high == pytest.approx(want.high, abs=1e-6)
            assert torch.allclose(got.scores, want.scores, atol=1e-5, rtol=0), (kind, window)
            # the maps are not flat, so equality is a real check
            assert (want.scores.max() - want.scores.min()).item() > 1e-3, kind


def test_restricted_cells_match_and_the_rest_are_nan():
    handle = tiny_handle("llama")
    fact = _known_tiny_facts(handle)[0]
    full = trace_fact(handle, fact, noise_std=10.0, n_samples=2, kinds=["resid"])["resid"]
    part = trace_fact(handle, fact, noise_std=10.0, n_samples=2, kinds=["resid"], positions=[2, -1],
                      layers=[1, 3])["resid"]
    n_pos = full.scores.shape[0]
    for t in range(n_pos):
        for layer in range(handle.n_layers):
            if t in (2, n_pos - 1) and layer in (1, 3):
                assert part.scores[t, layer] == pytest.approx(full.scores[t, layer].item(), abs=1e-6)
            else:
                assert torch.isnan(part.scores[t, layer])


def test_restoring_the_final_hidden_state_at_the_last_token_recovers_the_clean_probability():
    handle = tiny_handle("gpt2")
    fact = _known_tiny_facts(handle)[1]
    result = trace_fact(handle, fact, noise_std=10.0, n_samples=3, kinds=["resid"])["resid"]
    assert result.scores[-1, -1].item() == pytest.approx(result.high, abs=1e-5)
    # and restoring anything before the subject changes nothing
    start = result.subject_range[0]
    if start:
        assert torch.allclose(result.scores[:start], torch.full_like(result.scores[:start], result.low))


# ---------------------------------------------------------------------------------------------- results


def _result(scores: torch.Tensor, subject=(1, 3)) -> TraceResult:
    return TraceResult(case_id=0, kind="mlp", scores=scores, low=0.1, high=0.9, tokens=["a", "b", "c", "d"],
                       subject_range=subject, answer="x", answer_token=0, window=10, n_samples=10, noise_std=1.0,
                       seed=0)


def test_peak_and_layer_profile_read_the_right_cell():
    scores = torch.full((4, 6), 0.1)
    scores[2, 4] = 0.8  # last subject token (position 2), layer 4
    scores[3, 1] = 0.5
    result = _result(scores)
    assert result.peak() == (4, 2)
    assert torch.equal(result.layer_profile(), scores[2])
    assert torch.equal(result.layer_profile(3), scores[3])
    assert result.indirect_effect[2, 4].item() == pytest.approx(0.7)


def test_report_summary_counts_peaks_at_the_last_subject_token():
    at_last = torch.zeros(4, 6)
    at_last[2, 3] = 1.0
    elsewhere = torch.zeros(4, 6)
    elsewhere[0, 5] = 1.0
    report = TraceReport(noise_std=1.0, noise_multiplier=3.0, n_samples=10, window=10, seed=0,
                         backend="transformer_lens", traces=[{"mlp": _result(at_last)}, {"mlp": _result(elsewhere)}])
    summary = report.summary("mlp")
    assert summary.n_facts == 2
    assert summary.frac_peak_at_last_subject == 0.5
    assert summary.mean_peak_layer == 4.0
    assert summary.mean_peak_depth == pytest.approx((3 / 6 + 5 / 6) / 2)


def test_results_serialise_to_json():
    handle = tiny_handle("gpt2")
    facts = _known_tiny_facts(handle)
    report = trace_facts(handle, facts + [dataclasses.replace(facts[0], case_id=9, target_true="Ben")],
                         n_noise_samples=2, kinds=["resid"])
    payload = json.loads(json.dumps(to_jsonable(report)))
    assert len(payload["traces"]) == len(facts)
    assert payload["skipped"][0]["case_id"] == 9
    scores = payload["traces"][0]["resid"]["scores"]
    assert len(scores) == len(handle.to_tokens(facts[0].text)[0]) and len(scores[0]) == handle.n_layers


def test_only_known_facts_are_traced_and_the_rest_are_reported():
    handle = tiny_handle("llama")
    known = _known_tiny_facts(handle)
    wrong = [dataclasses.replace(f, case_id=10 + f.case_id,
                                 target_true=next(w for w in WORDS[3:] if w != f.target_true)) for f in known]
    traced, skipped = known_facts(handle, known + wrong)
    assert [f.case_id for f in traced] == [f.case_id for f in known]
    assert sorted(s.case_id for s in skipped) == sorted(f.case_id for f in wrong)
    assert all(s.reason and s.predicted for s in skipped)


# ---------------------------------------------------------------------------------------------- plots


def test_plots_write_pngs_with_the_subject_marked(tmp_path):
    from locate.plots import plot_fact_traces, token_labels

    handle = tiny_handle("gpt2")
    fact = _known_tiny_facts(handle)[0]
    results = trace_fact(handle, fact, noise_std=5.0, n_samples=2)
    labels = token_labels(results["mlp"])
    start, end = results["mlp"].subject_range
    assert [label.endswith("*") for label in labels] == [start <= i < end for i in range(len(labels))]
    path = tmp_path / "trace.png"
    plot_fact_traces(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- real models


def _first_known(handle, facts, n):
    known, _ = known_facts(handle, facts)
    if len(known) < n:
        pytest.skip(f"fewer than {n} known facts")
    return known[:n]


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_trace_matches_reference_and_restoring_helps(smollm2_handle):
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    facts = resolve_facts("smollm2")
    fact = _first_known(handle, facts[:20], 1)[0]
    std = 3 * subject_embedding_std(handle, facts)
    subject = fact_subject_tokens(handle, fact)
    positions, layers = [subject.last, -1], [2, 14, 26]
    batched = trace_fact(handle, fact, noise_std=std, n_samples=4, positions=positions, layers=layers)
    reference = reference_trace_fact(handle, fact, noise_std=std, n_samples=4, positions=positions, layers=layers)
    for kind in batched:
        assert batched[kind].high > batched[kind].low  # the noise hurts the known answer
        mask = ~torch.isnan(reference[kind].scores)
        diff = (batched[kind].scores[mask] - reference[kind].scores[mask]).abs().max().item()
        assert diff < 1e-5, (kind, diff)
    # restoring the last token's hidden state late in the network gives back most of the clean probability
    late = batched["resid"].scores[-1, 26].item()
    assert late > batched["resid"].low + 0.5 * (batched["resid"].high - batched["resid"].low)


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_mlp_effect_peaks_on_the_subject(smollm2_handle):
    """ROME's early site: restoring MLP outputs matters on the subject's tokens (ending at the last subject token),
    not at the prompt's last token, where the late site is attention."""
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    facts = resolve_facts("smollm2")
    fact = _first_known(handle, facts[:20], 1)[0]
    subject = fact_subject_tokens(handle, fact)
    std = 3 * subject_embedding_std(handle, facts)
    positions = list(subject.positions) + [-1]
    traces = trace_fact(handle, fact, noise_std=std, kinds=["mlp", "attn"], positions=positions,
                        layers=range(0, handle.n_layers, 2), n_samples=5)
    mlp, attn = traces["mlp"], traces["attn"]

    def best(scores: torch.Tensor) -> float:  # untraced (NaN) layers left out
        return torch.nan_to_num(scores, nan=-1.0).max().item()

    on_subject, at_end = best(mlp.scores[subject.start:subject.end]), best(mlp.scores[-1])
    assert mlp.peak()[1] in subject.positions
    assert on_subject - mlp.low > 0.3 * (mlp.high - mlp.low)
    assert on_subject > at_end
    # and at the last token it is attention that carries the answer, not the MLPs
    assert best(attn.scores[-1]) > at_end


@pytest.mark.slow
@pytest.mark.parametrize("corruption", ["noise", "replace"])
def test_world_trace_matches_reference_and_restoring_helps(world_handle, corruption):
    """World v3 keeps its facts at the subject (ROME's picture): with symmetric token replacement the MLP effect
    peaks at the last subject token in block 0, and restoring that token's residual brings the answer back; the
    answer reaches the prompt's last token through attention. The batched trace must equal the reference on it."""
    from obliviate.targets import resolve_facts

    handle = world_handle
    facts = resolve_facts("world")
    fact = _first_known(handle, facts[:40], 1)[0]
    std = 3 * subject_embedding_std(handle, facts[:40])
    replacements = replacement_subjects(handle, fact, facts, 5) if corruption == "replace" else None
    batched = trace_fact(handle, fact, noise_std=std, n_samples=5, replacements=replacements)
    reference = reference_trace_fact(handle, fact, noise_std=std, n_samples=5, replacements=replacements)
    for kind in batched:
        assert batched[kind].high > batched[kind].low + 0.5  # the corruption removes the known answer
        assert torch.allclose(batched[kind].scores, reference[kind].scores, atol=1e-5, rtol=0), kind
    last = len(batched["resid"].tokens) - 1
    # restoring the last position's attention output (the window spans the model) brings the answer back: the
    # subject reaches the answer through attention at the last token
    attn = batched["attn"]
    assert attn.scores[last].max().item() > attn.low + 0.8 * (attn.high - attn.low)
    mlp, resid = batched["mlp"], batched["resid"]
    start, end = mlp.subject_range
    span = mlp.high - mlp.low
    if corruption == "replace":
        # STR: the MLP effect peaks at the last subject token in the first half of the network (measured: block 0,
        # 0.92 of the clean 0.89), as ROME found in GPT-2 XL, and the last subject token's residual alone restores it
        layer, position = mlp.peak()
        assert position == end - 1 and layer < handle.n_layers // 2, mlp.peak()
        assert mlp.scores[end - 1].max().item() > mlp.low + 0.8 * span
        assert resid.scores[end - 1].max().item() > resid.low + 0.8 * span
    else:
        # 3σ noise on every subject token pushes every later state off-distribution: no single MLP restores the
        # answer (measured ≤ 0.02 of 0.89); the residual at the prompt's last token does, as it must
        assert (mlp.scores.max() - mlp.low).item() < 0.1 * span
        assert resid.scores[last].max().item() > resid.low + 0.8 * span
