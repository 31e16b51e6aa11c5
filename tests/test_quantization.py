"""Quantization attack: layouts are exact, each quantizer does what its format promises, hooks survive, and on the
world an untouched model loses little recall under INT8 while a hook suppression is not undone by quantizing."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import answer_stats, clone_tl, with_tl
from audit.quantization import (QuantizationConfig, bitsandbytes_available, edit_survival, fp4_codebook,
                                from_linear_layout, nf4_codebook, quantizable_parameters, quantize_dequantize,
                                quantized_tl, run_quantization, to_linear_layout)
from obliviate.hooks import LogitPenalty, attach_permanently
from _world import known_forget_targets


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_layout_round_trip_and_semantics(arch):
    model = tiny_handle(arch).tl
    params = dict(model.named_parameters())
    names = quantizable_parameters(model, include_embeddings=True)
    assert any(n.endswith("W_Q") for n in names) and any(n.endswith("W_out") for n in names)
    for name in names:
        w = params[name].detach()
        assert torch.equal(from_linear_layout(name, to_linear_layout(name, w), w.shape), w), name
    # the [out, in] matrix computes what the TL weight computes (rows = output features)
    x = torch.randn(3, model.cfg.d_model)
    w_q = params["blocks.0.attn.W_Q"].detach()
    q = x @ to_linear_layout("blocks.0.attn.W_Q", w_q).T
    assert torch.allclose(q.view(3, w_q.shape[0], w_q.shape[2]), torch.einsum("nd,hde->nhe", x, w_q), atol=1e-5)
    w_o = params["blocks.0.attn.W_O"].detach()
    z = torch.randn(3, w_o.shape[0], w_o.shape[1])
    assert torch.allclose(z.reshape(3, -1) @ to_linear_layout("blocks.0.attn.W_O", w_o).T,
                          torch.einsum("nhe,hed->nd", z, w_o), atol=1e-5)


def test_int8_is_rowwise_absmax_rounding():
    m = torch.randn(12, 96)
    d = quantize_dequantize(m, "int8")
    step = m.abs().amax(1, keepdim=True) / 127
    assert ((d - m).abs() <= step / 2 + 1e-6).all()
    assert torch.allclose(d / step, (d / step).round(), atol=1e-3)  # on the grid


def test_int4_groups_have_at_most_16_levels():
    m = torch.randn(8, 128)
    d = quantize_dequantize(m, "int4", QuantizationConfig(int4_group_size=64))
    for group in d.view(8, 2, 64).reshape(16, 64):
        assert len(torch.unique(group)) <= 16
    assert not torch.equal(d, m) and (d - m).abs().max() < (m.max() - m.min()) / 15


@pytest.mark.parametrize("group_size", [64, None])
def test_int4_reads_back_what_quanto_packs(group_size):
    """The codes are read before quanto packs them (no compiled kernel); quanto's own packed weight, unpacked as its
    reference kernel does (optimum/quanto/library/unpack.py: the low nibbles' rows, then the high nibbles') and read
    back by its own dequantizer, gives the same numbers."""
    from optimum.quanto import MaxOptimizer, qint4, quantize_weight

    m = torch.randn(8, 128)
    scale, shift = MaxOptimizer()(m, qtype=qint4, axis=0, group_size=group_size)
    stored = quantize_weight(m, qint4, axis=0, scale=scale, shift=shift, group_size=group_size, optimized=False)
    packed = stored._data._data
    stored._data = torch.cat([packed & 0xF, packed >> 4])[: stored._data.shape[0]]  # the codes, unpacked
    ours = quantize_dequantize(m, "int4", QuantizationConfig(int4_group_size=group_size))
    assert torch.equal(ours, stored.dequantize())


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_4bit_values_are_codebook_times_block_absmax(kind):
    m = torch.randn(6, 100)  # 600 values: the last 64-block is padded
    d = quantize_dequantize(m, kind)
    code = torch.tensor(nf4_codebook() if kind == "nf4" else fp4_codebook())
    assert len(code) in (15, 16) and code.max() == 1.0 and code.min() == -1.0 and (code == 0).any()
    flat, out = m.reshape(-1), d.reshape(-1)
    for start in range(0, flat.numel(), 64):
        absmax = flat[start:start + 64].abs().max()
        ratios = out[start:start + 64] / absmax
        assert ((ratios[:, None] - code).abs().min(1).values < 1e-5).all()
        # nearest code value: no other code value is closer to the original
        best = (flat[start:start + 64, None] / absmax - code).abs().min(1).values
        assert ((flat[start:start + 64] / absmax - ratios).abs() <= best + 1e-5).all()


@pytest.mark.skipif(not bitsandbytes_available(), reason="bitsandbytes is not installed (optional)")
@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_codebook_matches_bitsandbytes(kind):
    m = torch.randn(64, 192)
    ours = quantize_dequantize(m, kind, QuantizationConfig(backend_4bit="codebook"))
    theirs = quantize_dequantize(m, kind, QuantizationConfig(backend_4bit="bitsandbytes"))
    assert (ours - theirs).abs().max() < 1e-6


def test_quantized_copy_keeps_hooks_and_leaves_the_original_alone():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    answers = tuple(handle.answer_token(f.target_true) for f in facts)
    attach_permanently(tl, [LogitPenalty(answers, 30.0)])
    before = {k: v.clone() for k, v in tl.state_dict().items()}
    quantized = quantized_tl(tl, "int4")
    assert all(torch.equal(before[k], v) for k, v in tl.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in quantized.state_dict().items())
    stats = answer_stats(with_tl(handle, quantized), [f.text for f in facts], [f.target_true for f in facts])
    assert (stats.p_true < 1e-6).all()  # the penalty still acts on the quantized copy
    quantized.reset_hooks(including_permanent=True)
    stats = answer_stats(with_tl(handle, quantized), [f.text for f in facts], [f.target_true for f in facts])
    assert (stats.p_true > 1e-6).all()


def test_a_tiny_delta_rounds_back_and_a_large_one_survives():
    handle = tiny_handle("gpt2")
    name = "blocks.1.mlp.W_out"
    for size, expected in ((1e-6, 0.0), (5.0, 1.0)):
        tl = clone_tl(handle.tl)
        with torch.no_grad():
            w = dict(tl.named_parameters())[name]
            delta = torch.zeros_like(w)
            delta[3, :] = size  # one hidden unit's output row, as a rank-1 edit writes
            w.add_(delta)
        survival = edit_survival(handle, with_tl(handle, tl), "int4")[name]
        assert survival.projection == pytest.approx(expected, abs=0.15)


@pytest.mark.slow
def test_int8_on_untouched_world_keeps_recall(world_handle):
    from obliviate.metrics import recall
    from obliviate.targets import resolve_facts

    facts = resolve_facts("world")[::2]
    quantized = with_tl(world_handle, quantized_tl(world_handle.tl, "int8"))
    full, q8 = recall(world_handle, facts), recall(quantized, facts)
    assert full > 0.1  # enough recalled facts for a change to show
    assert abs(full - q8) <= 0.02


@pytest.mark.slow
def test_quantizing_a_hook_suppression_keeps_it_suppressed(world_handle, world_retain_handle):
    targets = known_forget_targets(world_handle, 24)
    tl = clone_tl(world_handle.tl)
    attach_permanently(tl, [LogitPenalty(tuple(sorted({world_handle.answer_token(f.target_true) for f in targets})),
                                         20.0)])
    edited = with_tl(world_handle, tl)
    result = run_quantization(world_handle, edited, targets, oracle=world_retain_handle,
                              config=QuantizationConfig(schemes=("int8", "nf4")))
    assert result.metrics["mean_before"] > 0.2
    assert result.metrics["mean_attacked"] < 0.01  # hooks kept: quantization does not undo an output penalty
    assert set(result.variants) == {"int8", "nf4"}
    assert result.oracle is not None and set(result.oracle.recovered) == set(result.recovered)


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_is_on_the_q4_1_grid(smollm2_handle):
    """SmolLM2 here was dequantized from GGUF Q4_1 (affine, 32 per block): int4 with group 32 reproduces its block
    weights exactly, so re-quantizing an edited SmolLM2 that way snaps every sub-bin change back to the base."""
    params = dict(smollm2_handle.tl.named_parameters())
    config = QuantizationConfig(int4_group_size=32)
    for name in ("blocks.3.attn.W_Q", "blocks.3.mlp.W_out"):
        m = to_linear_layout(name, params[name].detach())
        assert torch.allclose(quantize_dequantize(m, "int4", config), m, atol=1e-6)
        assert not torch.allclose(quantize_dequantize(m, "int4", QuantizationConfig(int4_group_size=64)), m,
                                  atol=1e-6)
