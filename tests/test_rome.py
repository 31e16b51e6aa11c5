"""ROME: the update is rank one and writes v* for k*, deltas restore bit-exactly, and real edits do what they claim."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.context import activations_at_subject, context_templates, fill, lookup_batch
from edit.covariance import CovarianceConfig
from edit.deltas import apply_deltas, changed_tensors
from edit.rome import RomeConfig, rome_edit, rome_templates
from edit.sites import edit_site, post_norm, projection_output
from edit.value_opt import (ValueOptSettings, _PrefixCachedRunner, _runner_model, _TLRunner, goal_answer,
                             low_precision_copy, output_logprobs)
from obliviate.config import from_dict
from obliviate.config.loader import ConfigError
from obliviate.metrics import last_token_logprobs, target_nll



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def tiny_cfg(corpus, **kwargs) -> RomeConfig:
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=1500, seq_len=24, cache=False)
    return RomeConfig(covariance=cov, context_lengths=[(5, 3), (10, 3)], **kwargs)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_edit_site_is_the_down_projection(arch):
    handle = tiny_hf_handle(arch)
    site = edit_site(handle, 1)
    tokens = handle.to_tokens("The Eiffel Tower is in the city of")
    _, cache = handle.tl.run_with_cache(tokens)
    mlp = handle.tl.blocks[1].mlp
    own = cache[site.key_hook] @ mlp.W_out + mlp.b_out
    assert torch.allclose(projection_output(handle.tl, site, cache[site.key_hook]), own)
    if arch == "gemma3":  # the residual receives the projection's output through the post-MLP norm
        assert site.out_norm == "blocks.1.ln2_post"
        assert not torch.allclose(own, cache[site.out_hook], atol=1e-3)
        own = post_norm(handle.tl, site, own)
    assert torch.allclose(own, cache[site.out_hook], atol=1e-5)
    hf_weight = handle.hf.get_parameter(site.hf_weight)
    assert torch.equal(hf_weight.T if site.hf_transpose else hf_weight, mlp.W_out.detach())


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_prefix_cached_runner_equals_full_forward(arch):
    handle = tiny_hf_handle(arch)
    facts = tiny_facts()
    templates = [t for group in context_templates(handle, [(5, 2), (10, 2)]) for t in group]
    texts, ends = zip(*[fill(t, f.prompt, f.subject) for f in facts for t in templates])
    batch = lookup_batch(handle, list(texts), list(ends), [[13]] * len(texts))
    row_fact = torch.arange(len(facts)).repeat_interleave(len(templates))
    cached, plain = _PrefixCachedRunner(handle, 1, batch), _TLRunner(handle, 1, batch)
    valid = torch.arange(batch.tokens.shape[1])[None] < (batch.lengths - batch.subject_idx)[:, None]
    for _ in range(2):  # the second call must not see the first call's suffix in the cache
        delta = torch.randn(len(facts), handle.tl.cfg.d_model)
        ours, reference = cached(delta[row_fact]), plain(delta[row_fact])
        assert ours.shape == reference.shape
        mask = valid[:, : ours.shape[1]]
        assert torch.allclose(ours[mask], reference[mask], atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_a_bfloat16_runner_tracks_float32_and_leaves_the_model_alone(arch):
    """compute_dtype='bfloat16' runs the blocks on a bfloat16 copy: float32 states out, within bfloat16's rounding
    of the float32 runner's (but not equal: the copy really runs in bfloat16), a float32 gradient for the shift, and
    the handle's own weights untouched (dtype and values)."""
    handle = tiny_hf_handle(arch)
    before = {name: p.detach().clone() for name, p in handle.hf.named_parameters()}
    facts = tiny_facts()
    templates = [t for group in context_templates(handle, [(5, 2)]) for t in group]
    texts, ends = zip(*[fill(t, f.prompt, f.subject) for f in facts for t in templates])
    batch = lookup_batch(handle, list(texts), list(ends), [[13]] * len(texts))
    copy = low_precision_copy(handle.hf, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in copy.parameters())
    full, low = _PrefixCachedRunner(handle, 1, batch), _PrefixCachedRunner(handle, 1, batch, model=copy)
    valid = torch.arange(batch.tokens.shape[1])[None] < (batch.lengths - batch.subject_idx)[:, None]
    shift = torch.randn(len(texts), handle.tl.cfg.d_model, requires_grad=True)
    ours, reference = low(shift), full(shift.detach())
    mask = valid[:, : ours.shape[1]]
    assert ours.dtype == torch.float32
    error = (ours[mask] - reference[mask]).abs().max() / reference[mask].abs().max()
    assert 0 < error < 0.05, error
    (grad,) = torch.autograd.grad(ours[mask].sum(), [shift])
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0
    for name, p in handle.hf.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("with_bias", [False, True])
def test_output_logprobs_and_their_gradient_equal_log_softmax_then_gather(with_bias):
    """The scored rows' token log-probs and the full rows' log-softmax, and the gradient of any loss on both with
    respect to the hidden states, equal autograd through log_softmax (and gather)."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, generator=generator, dtype=torch.float64) if with_bias else None
    tokens = torch.tensor([0, 3, 3, 49, 12, 7, 0])  # rows 0..6 scored, rows 7..9 full
    upstream = torch.randn(7, generator=generator, dtype=torch.float64)
    upstream_full = torch.randn(3, 50, generator=generator, dtype=torch.float64)
    ours, ours_full = output_logprobs(hidden, weight, bias, tokens)
    log_p = torch.nn.functional.linear(hidden, weight, bias).log_softmax(-1)
    reference, reference_full = log_p[:7].gather(-1, tokens[:, None])[:, 0], log_p[7:]
    assert torch.allclose(ours.double(), reference, atol=1e-5)  # float32 logits inside
    assert torch.allclose(ours_full.double(), reference_full, atol=1e-5)
    for loss_of in (lambda t, f: (t * upstream).sum(), lambda t, f: (f * upstream_full).sum(),
                    lambda t, f: (t * upstream).sum() + (f.exp() * f).sum()):  # the v* loss reads both
        (ours_grad,) = torch.autograd.grad(loss_of(ours, ours_full), [hidden], retain_graph=True)
        (reference_grad,) = torch.autograd.grad(loss_of(reference, reference_full), [hidden], retain_graph=True)
        assert torch.allclose(ours_grad, reference_grad, atol=1e-5)
    assert weight.grad is None  # the output layer is a constant


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_rome_update_is_rank_one_and_writes_v_star_for_k_star(arch, corpus):
    handle = tiny_hf_handle(arch)
    result = rome_edit(handle, tiny_facts()[0], 1, tiny_cfg(corpus))
    delta_w = result.deltas["blocks.1.mlp.W_out"]
    assert torch.linalg.matrix_rank(delta_w) == 1
    k_star, delta = result.vectors["k_star"], result.vectors["delta"]
    # the edited layer maps the averaged key to its old value plus the optimised δ
    assert torch.allclose(k_star @ delta_w, delta, atol=1e-4 * delta.norm())
    u = result.vectors["u"]
    assert torch.isclose(u.norm(), torch.tensor(1.0))
    assert result.hf_names == {"blocks.1.mlp.W_out": edit_site(handle, 1).hf_weight}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_the_edited_model_gives_the_block_the_output_the_optimisation_chose(arch, corpus):
    """With the bare prompt's key (the reference's v), the edited weights reproduce on the bare prompt exactly the
    block output the v* optimisation scored: init + δ, or norm(init + δ) behind Gemma's post-MLP norm."""
    handle = tiny_hf_handle(arch)
    fact = tiny_facts()[0]
    result = rome_edit(handle, fact, 1, tiny_cfg(corpus, consistent_keys=False), goal="rewrite")
    site = edit_site(handle, 1)
    text, end = fill("{}", fact.prompt, fact.subject)
    batch = lookup_batch(handle, [text], [end])
    def received(own: torch.Tensor) -> torch.Tensor:
        return post_norm(handle.tl, site, own[None])[0] if site.out_norm is not None else own

    wanted = received(result.vectors["v_init"] + result.vectors["delta"])
    with apply_deltas(handle, result.deltas):
        _, cache = handle.tl.run_with_cache(batch.tokens, names_filter=[site.out_hook])
    got = cache[site.out_hook][0, batch.subject_idx[0]]
    assert torch.allclose(got, wanted, atol=1e-4 * float(wanted.norm())), (got - wanted).norm()
    assert (got - received(result.vectors["v_init"])).norm() > 1e-2  # and the edit moved it


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_template_key_gets_the_optimised_delta(arch, corpus):
    """With every_template_key the edit adds exactly δ to the block's output in every template (the v*
    optimisation's assumption), the bare prompt included; the averaged k* gets δ only on average."""
    handle = tiny_hf_handle(arch)
    fact = tiny_facts()[0]
    cfg = tiny_cfg(corpus, every_template_key=True)
    templates = rome_templates(handle, cfg)
    site = edit_site(handle, 1)

    def added_outputs(result) -> torch.Tensor:
        texts, ends = zip(*[fill(t, fact.prompt, fact.subject) for group in templates for t in group])
        before = activations_at_subject(handle, site.out_hook, list(texts), list(ends))
        with apply_deltas(handle, result.deltas):
            after = activations_at_subject(handle, site.out_hook, list(texts), list(ends))
        return after - before

    exact = rome_edit(handle, fact, 1, cfg, templates=templates)
    delta = exact.vectors["delta"]
    added = added_outputs(exact)
    assert torch.allclose(added, delta.expand_as(added), atol=1e-3 * float(delta.norm())), \
        (added - delta).norm(dim=-1).max()
    assert torch.linalg.matrix_rank(exact.deltas[site.weight]) == 1
    averaged = rome_edit(handle, fact, 1, tiny_cfg(corpus), templates=templates)
    spread = (added_outputs(averaged) - averaged.vectors["delta"]).norm(dim=-1)
    assert spread.max() > 1e-2 * float(averaged.vectors["delta"].norm())  # the mean key's edit misses some
    assert torch.allclose(added_outputs(averaged).mean(0), averaged.vectors["delta"],
                          atol=1e-3 * float(averaged.vectors["delta"].norm()))


def test_rome_leaves_the_model_untouched_and_deltas_restore_bit_exactly(corpus):
    handle = tiny_hf_handle("llama")
    before_tl = {k: v.clone() for k, v in handle.tl.state_dict().items()}
    before_hf = {k: v.clone() for k, v in handle.hf.state_dict().items()}
    result = rome_edit(handle, tiny_facts()[1], 2, tiny_cfg(corpus))
    prompt = tiny_facts()[1].text
    clean = last_token_logprobs(handle, [prompt])
    with apply_deltas(handle, result.deltas):
        name = result.hf_names["blocks.2.mlp.W_out"]
        assert torch.equal(handle.hf.get_parameter(name), result.changed[name])
        assert not torch.allclose(last_token_logprobs(handle, [prompt]), clean)
    with pytest.raises(RuntimeError), apply_deltas(handle, result.deltas):
        raise RuntimeError("an error inside the block still restores")
    for key, value in handle.tl.state_dict().items():
        assert torch.equal(value, before_tl[key]), key
    for key, value in handle.hf.state_dict().items():
        assert torch.equal(value, before_hf[key]), key
    assert set(changed_tensors(handle, result.deltas)) == set(result.changed)


def test_rome_reference_key_mode_only_rescales_v(corpus):
    handle = tiny_hf_handle("gpt2")
    fact = tiny_facts()[2]
    ours = rome_edit(handle, fact, 1, tiny_cfg(corpus))
    reference = rome_edit(handle, fact, 1, tiny_cfg(corpus, consistent_keys=False))
    assert torch.allclose(ours.vectors["u"], reference.vectors["u"])
    cosine = torch.nn.functional.cosine_similarity(ours.vectors["v"], reference.vectors["v"], dim=0)
    assert cosine > 0.999


def test_erase_goal_answers():
    fact = tiny_facts()[0]
    assert goal_answer(fact, "rewrite", ValueOptSettings()) == ("Rome", True)
    assert goal_answer(fact, "erase", ValueOptSettings()) == ("Paris", False)
    assert goal_answer(fact, "erase", ValueOptSettings(erase_mode="neutral", neutral_target="unknown")) == \
        ("unknown", True)


def test_an_unknown_erase_mode_is_refused_naming_the_field():
    """ROME's and the MEMIT family's configs (when loaded), their settings and goal_answer share one check (the
    config loader's, for any Literal-typed field)."""
    from edit.alphaedit import AlphaEditConfig
    from edit.memit import MemitConfig

    for config in (RomeConfig, MemitConfig, AlphaEditConfig):
        with pytest.raises(ConfigError, match="erase_mode"):
            from_dict(config, {"erase_mode": "forget"})
    with pytest.raises(ValueError, match=r"erase_mode.*not one of \['suppress', 'neutral'\]"):
        MemitConfig(erase_mode="forget").settings()
    with pytest.raises(ValueError, match=r"erase_mode.*not one of \['suppress', 'neutral'\]"):
        goal_answer(tiny_facts()[0], "erase", ValueOptSettings(erase_mode="forget"))  # type: ignore[arg-type]


def test_a_bfloat16_rome_edit_finds_the_float32_delta(corpus):
    """The v* loop in bfloat16 reaches the float32 loop's δ to within bfloat16's rounding on the tiny model (the
    numerics that matter on SmolLM2 are measured in the README), and writes a float32 ΔW."""
    handle = tiny_hf_handle("llama")
    fact = tiny_facts()[0]
    full = rome_edit(handle, fact, 1, tiny_cfg(corpus), goal="rewrite")
    low = rome_edit(handle, fact, 1, tiny_cfg(corpus, compute_dtype="bfloat16"), goal="rewrite")
    a, b = full.vectors["delta"].flatten(), low.vectors["delta"].flatten()
    assert torch.cosine_similarity(a, b, dim=0) > 0.99 and not torch.equal(a, b)
    assert all(d.dtype == torch.float32 for d in low.deltas.values())


def test_an_unknown_or_unsupported_compute_dtype_is_refused_naming_the_field():
    from edit.alphaedit import AlphaEditConfig
    from edit.memit import MemitConfig

    for config in (RomeConfig, MemitConfig, AlphaEditConfig):
        with pytest.raises(ConfigError, match="compute_dtype"):
            from_dict(config, {"compute_dtype": "float16"})
        assert from_dict(config, {"compute_dtype": "bfloat16"}).settings().compute_dtype == "bfloat16"
    handle = tiny_hf_handle("gpt2")
    with pytest.raises(ValueError, match="compute_dtype='bfloat16'.*prefix_cache is off"):
        _runner_model(handle, ValueOptSettings(compute_dtype="bfloat16", prefix_cache=False))
    assert _runner_model(handle, ValueOptSettings()) is handle.hf


def test_plateau_stop_ends_at_the_first_step_that_barely_improves_once_the_goal_is_met(corpus, monkeypatch):
    """With plateau_tol the optimisation stops at the first step that lowers the loss by less than that share of
    the previous one — not at a step that raises it (Adam overshooting: here at a high lr) — and keeps the δ of
    that step: the same δ as a run capped at that many steps without the rule. But only once the goal is met: the
    tiny random model never makes the new answer likely (p < 5% after 60 steps, the loss near 6), so with the real
    threshold the rule never fires; with the threshold raised above every loss, it fires where the plain rule
    would."""
    import edit.value_opt

    handle = tiny_hf_handle("llama")
    fact = tiny_facts()[0]
    tol = 0.01
    free = rome_edit(handle, fact, 1, tiny_cfg(corpus, steps=60, stop_loss=0.0, lr=20.0), goal="rewrite")
    curve = free.losses[0]
    assert len(curve) == 60 and free.metrics["goal_prob"] < 0.05
    waiting = rome_edit(handle, fact, 1, tiny_cfg(corpus, steps=60, stop_loss=0.0, lr=20.0, plateau_tol=tol),
                        goal="rewrite")
    assert waiting.losses[0] == curve and torch.equal(waiting.vectors["delta"], free.vectors["delta"])

    monkeypatch.setattr(edit.value_opt, "GOAL_MET", float("inf"))  # every step counts as having met the goal
    stopped = rome_edit(handle, fact, 1, tiny_cfg(corpus, steps=60, stop_loss=0.0, lr=20.0, plateau_tol=tol),
                        goal="rewrite")
    losses = stopped.losses[0]
    assert 2 <= len(losses) < 60
    assert curve[1] > curve[0]  # the first step overshoots: a rise, which must not stop it
    assert losses == curve[: len(losses)]  # the same trajectory up to the stop
    gains = [(a - b) / a for a, b in zip(losses, losses[1:])]
    assert all(g >= tol or g < 0 for g in gains[:-1]) and 0 <= gains[-1] < tol, gains
    capped = rome_edit(handle, fact, 1, tiny_cfg(corpus, steps=len(losses), stop_loss=0.0, lr=20.0), goal="rewrite")
    assert torch.equal(stopped.vectors["delta"], capped.vectors["delta"])


def test_config_loads_from_edit_params():
    cfg = from_dict(RomeConfig, {"layer": 3, "kl_factor": 0.1, "context_lengths": [[5, 2]],
                                 "covariance": {"n_tokens": 5000, "corpus": "stdlib-docstrings"}})
    assert cfg.layer == 3 and cfg.covariance.n_tokens == 5000 and list(map(tuple, cfg.context_lengths)) == [(5, 2)]
    with pytest.raises(Exception):
        from_dict(RomeConfig, {"no_such_field": 1})
    assert from_dict(RomeConfig, {"plateau_tol": 0.01}).plateau_tol == 0.01
    for wrong in (0, 1.5):
        with pytest.raises(ConfigError, match="plateau_tol"):
            from_dict(RomeConfig, {"plateau_tol": wrong})


@pytest.mark.slow
@pytest.mark.smollm2
def test_rome_rewrites_a_smollm2_fact_and_spares_a_neighbour(smollm2_handle):
    from obliviate.targets import resolve_facts

    handle = smollm2_handle
    facts = resolve_facts("smollm2")
    fact = next(f for f in facts if f.subject == "Eiffel Tower" or "Eiffel" in f.subject)
    neighbour = fact.neighborhood_prompts[0]
    cfg = RomeConfig(covariance=CovarianceConfig(n_tokens=8000), context_lengths=[(5, 5), (10, 5)])
    before = last_token_logprobs(handle, [fact.text, neighbour])
    assert before[0].argmax() == handle.answer_token(fact.target_true)
    result = rome_edit(handle, fact, 6, cfg)
    with apply_deltas(handle, result.deltas):
        after = last_token_logprobs(handle, [fact.text, neighbour])
    assert after[0].argmax() == handle.answer_token(fact.target_new)
    assert after[1].argmax() == before[1].argmax()
    # the neighbour's distribution barely moves: total variation well under the edited prompt's
    tv = 0.5 * (after.exp() - before.exp()).abs().sum(-1)
    assert tv[1] < 0.2 < tv[0]


@pytest.mark.slow
def test_rome_at_the_last_subject_token_erases_world_facts_at_block_0(world_handle):
    """World v3 keeps its facts at the subject (the trace's MLP peak sits at the last subject token in block 0), so a
    rank-one edit keyed on that state at block 0 removes them: measured on three forget facts, NLL 0.01-0.03 ->
    3.6-5.6 nats, none recalled, recall of 200 retain facts unchanged. (On world v2, which looked its facts up at
    the prompt's last token, the same edit moved the NLL by <= 0.05 nats at every layer.)"""
    from obliviate.metrics import recall
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world")
    forget = [f for f in facts if f.split == "forget" and bool(recall(world_handle, [f]))][:3]
    other = [f for f in facts if f.split == "retain" and f.subject not in {f.subject for f in forget}][:200]
    cfg = RomeConfig(covariance=CovarianceConfig(n_tokens=20_000), context_lengths=[(5, 5), (10, 5)])
    retain_before = recall(world_handle, other)
    for fact in forget:
        nll_before = target_nll(world_handle, [fact.text], [fact.target_true])[0]
        result = rome_edit(world_handle, fact, 0, cfg, goal="erase")
        with apply_deltas(world_handle, result.deltas):
            nll_after = target_nll(world_handle, [fact.text], [fact.target_true])[0]
            assert not bool(recall(world_handle, [fact])), fact
            assert recall(world_handle, other) >= retain_before - 0.01
        assert nll_after - nll_before > 2.0, (fact, nll_before, nll_after)


@pytest.mark.slow
def test_rome_rewrites_world_facts_at_block_0_to_the_counterfact_targets(world_handle):
    """The world issue's ROME target (ES >= 95, PS >= 85, NS >= 90) at the block the trace names, on the first ten
    of the 50 forget facts the README measures (every second one; there ES 100, PS 91.6, NS 99.6 with 40 v* steps,
    and ES 84, PS 74 with the reference's 20: the world's facts need the longer optimisation)."""
    from obliviate.metrics import counterfact_scores
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world", split="forget")[::2][:10]
    cfg = RomeConfig(steps=40)
    scores = []
    for fact in facts:
        result = rome_edit(world_handle, fact, 0, cfg, goal="rewrite")
        with apply_deltas(world_handle, result.deltas):
            scores.append(counterfact_scores(world_handle, [fact]))
    es, ps, ns = (sum(getattr(s, key) for s in scores) / len(scores) for key in ("es", "ps", "ns"))
    assert es >= 95 and ps >= 85 and ns >= 90, (es, ps, ns)
