"""Quantization recovery: quantize the edited weights, keep the edit's hooks, re-measure the targets.

Zhang et al. (ICLR 2025, "Catastrophic Failure of LLM Unlearning via Quantization"; reference code uses
bitsandbytes) found unlearned models retaining 21% of the forgotten knowledge at full precision and 83% after 4-bit
quantization: gradient-based unlearning moves weights by far less than a 4-bit bin, so rounding maps them back onto
the original model's grid. DurableUn (2026) reports INT8 as benign and INT4 recovering up to 22× more. The figure
is the recovery R = (q − u) / (b − u): q = the quantized edited model, u = the edited model at full precision,
b = the base model before unlearning (all p_true of the target; audit/attack_result.py).

What is quantized: every attention and MLP weight matrix of every block (W_Q, W_K, W_V, W_O, W_in, W_gate, W_out),
in the Hugging Face [out, in] layout a quantized Linear stores, so the groups are the library's groups. Embeddings,
unembedding, norms and biases stay in full precision, as transformers' bitsandbytes integration keeps them. The
dequantized values are written into a deep copy of the TransformerLens model, whose permanent hooks (the edit's
interventions) are re-attached: the attacked model is "the edited model, quantized".

Schemes (`QuantizationConfig.schemes`):
- ``int8``: optimum-quanto ``qint8``, symmetric per output row (absmax / 127) — the weight format of LLM.int8
  (bitsandbytes' ``int8_vectorwise_quant`` gives the same values; LLM.int8's outlier decomposition acts on
  activations in the matmul, not on the stored weights, and is not simulated).
- ``int4``: optimum-quanto ``qint4``, affine (min/max) per group of `int4_group_size` inputs of each row.
- ``nf4`` / ``fp4``: bitsandbytes' 4-bit formats: absmax per block of `block_size` consecutive values of the
  flattened [out, in] weight, each value rounded to the nearest of 16 code values. quanto has no NF4/FP4 and
  bitsandbytes is not a dependency, so by default the codebooks (NF4: the QLoRA normal-quantile construction,
  offset 0.9677083; FP4: bitsandbytes' e2m1 values) are applied by hand. bitsandbytes 0.50.2's CPU backend does
  run here (`functional.quantize_4bit` / `dequantize_4bit`); its output equals the hand-applied codebook to
  float32 rounding of the code values (tests/test_quantization.py checks it when bitsandbytes is importable), and
  `backend_4bit="bitsandbytes"` uses it. One early trial saw its first fp4 call in a process return values one
  bin off, not reproducible afterwards; the deterministic codebook is the default for that reason.

Score per target: p_true on the quantized model (scheme by scheme in `variants`; the headline q is the best scheme
per target — an attacker tries them all; the oracle gets the same maximum).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

import torch
from jaxtyping import Float

from audit.attack_result import (AttackContext, AttackResult, TargetScore, answer_stats, assemble, clone_tl,
                                 with_oracle, with_tl)
from obliviate.facts import Fact
from obliviate.registry import ATTACKS

SCHEMES = ("int8", "int4", "nf4", "fp4")
# bitsandbytes' FP4 (sign + 2-bit exponent + 1-bit mantissa, its own bias; subnormal 0.0625/12), normalised to 1
_FP4_MAGNITUDES = (0.0, 1 / 192, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0)
_MATRIX_SUFFIXES = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn._W_K", "attn._W_V", "attn.W_O",
                    "mlp.W_in", "mlp.W_gate", "mlp.W_out")


@dataclass(frozen=True)
class QuantizationConfig:
    """Which quantizations to try and how."""

    schemes: tuple[str, ...] = SCHEMES
    """Any of int8, int4, nf4, fp4."""
    int4_group_size: int | None = 64
    """Inputs per scale/shift group for int4 (None: one group per row). 64 matches bitsandbytes' 4-bit block;
    quanto's own QLinear picks 128 when the row is longer than 128."""
    block_size: int = 64
    """nf4/fp4 absmax block (bitsandbytes' default)."""
    backend_4bit: Literal["auto", "bitsandbytes", "codebook"] = "codebook"
    """nf4/fp4 implementation: the hand-applied codebook, bitsandbytes, or auto (bitsandbytes if importable)."""
    include_embeddings: bool = False
    """Also quantize the token embedding and unembedding (bitsandbytes via transformers leaves them)."""
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""


# ---------------------------------------------------------------------------------------------------------------
# Layouts: TransformerLens weights <-> the [out, in] matrix a quantized Linear stores
# ---------------------------------------------------------------------------------------------------------------


def quantizable_parameters(tl: Any, include_embeddings: bool = False) -> list[str]:
    """Names of the TL parameters a weight-only quantizer touches."""
    names = [n for n, _ in tl.named_parameters() if n.startswith("blocks.") and n.endswith(_MATRIX_SUFFIXES)]
    if include_embeddings:
        names += [n for n in ("embed.W_E", "unembed.W_U") if n in dict(tl.named_parameters())]
    return names


def to_linear_layout(name: str, w: torch.Tensor) -> Float[torch.Tensor, "out inp"]:
    """The [out, in] matrix of a TL weight (how the HF Linear / transposed Conv1D stores it)."""
    if name.endswith(("W_Q", "W_K", "W_V")):  # [head, d_model, d_head] → [head·d_head, d_model]
        return w.permute(0, 2, 1).reshape(-1, w.shape[1])
    if name.endswith("W_O"):  # [head, d_head, d_model] → [d_model, head·d_head]
        return w.reshape(-1, w.shape[-1]).T
    if name.endswith(("W_in", "W_gate", "W_out", "W_U")):  # [in, out] → [out, in]
        return w.T
    if name.endswith("W_E"):  # an embedding row per token, as stored
        return w
    raise KeyError(f"no linear layout for TL parameter {name!r}")


def from_linear_layout(name: str, m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of `to_linear_layout` back to the TL shape."""
    if name.endswith(("W_Q", "W_K", "W_V")):
        heads, d_model, d_head = shape
        return m.reshape(heads, d_head, d_model).permute(0, 2, 1).contiguous()
    if name.endswith("W_O"):
        return m.T.reshape(shape).contiguous()
    if name.endswith(("W_in", "W_gate", "W_out", "W_U")):
        return m.T.contiguous()
    if name.endswith("W_E"):
        return m.contiguous()
    raise KeyError(f"no linear layout for TL parameter {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# Quantize → dequantize one [out, in] matrix
# ---------------------------------------------------------------------------------------------------------------


def _quanto_int8(m: torch.Tensor) -> torch.Tensor:
    from optimum.quanto import AbsmaxOptimizer, qint8, quantize_weight

    scale = AbsmaxOptimizer()(m, qtype=qint8, axis=0)
    return quantize_weight(m, qint8, axis=0, scale=scale, optimized=False).dequantize()


def _quanto_int4(m: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """quanto's INT4 codes for `m`, read back as quanto reads them (its QBitsDequantizer: scale × code − shift for
    a float shift, per group). The codes are taken before quanto packs two to a byte: unpacking them on the CPU
    compiles quanto's C++ kernel on first use (about 45 s here, and a C++ compiler the user may not have) to return
    the same numbers."""
    from optimum.quanto import MaxOptimizer, qint4
    from optimum.quanto.tensor.grouped import ungroup

    if group_size is not None and (m.shape[1] % group_size or m.shape[1] <= group_size):
        group_size = None  # quanto groups whole rows only; a row shorter than a group is one group
    scale, shift = MaxOptimizer()(m, qtype=qint4, axis=0, group_size=group_size)
    codes = torch.ops.quanto.quantize_affine(m, bits=qint4.bits, axis=0, group_size=group_size, scale=scale,
                                             shift=shift)
    if shift.dtype.is_floating_point:
        values = scale * codes - shift
    else:  # an integer zero point
        values = scale * (codes.to(torch.int8) - shift.to(torch.int8))
    return ungroup(values, axis=0, orig_shape=m.shape) if group_size is not None else values


@lru_cache(maxsize=None)
def nf4_codebook() -> tuple[float, ...]:
    """NF4 (Dettmers et al. 2023, QLoRA): normal quantiles, 8 positive and 7 negative plus an exact zero, scaled
    to [−1, 1]; the quantile range is clipped at offset 0.9677083 (QLoRA's choice)."""
    from scipy.stats import norm

    offset = 0.9677083
    positive = norm.ppf(torch.linspace(offset, 0.5, 9)[:-1].double().numpy())
    negative = -norm.ppf(torch.linspace(offset, 0.5, 8)[:-1].double().numpy())
    values = sorted([*positive.tolist(), 0.0, *negative.tolist()])
    top = max(abs(v) for v in values)
    return tuple(float(torch.tensor(v / top, dtype=torch.float32)) for v in values)


def fp4_codebook() -> tuple[float, ...]:
    return tuple(sorted({*_FP4_MAGNITUDES, *(-v for v in _FP4_MAGNITUDES)}))


def _codebook_4bit(m: torch.Tensor, kind: str, block_size: int) -> torch.Tensor:
    code = torch.tensor(nf4_codebook() if kind == "nf4" else fp4_codebook(), dtype=torch.float32)
    flat = m.reshape(-1).float()
    pad = (-flat.numel()) % block_size
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, block_size)
    absmax = blocks.abs().amax(1, keepdim=True)
    scaled = blocks / absmax.clamp(min=torch.finfo(torch.float32).tiny)
    # nearest code value = the bucket between consecutive midpoints (code is sorted)
    nearest = torch.bucketize(scaled, (code[1:] + code[:-1]) / 2)
    return (code[nearest] * absmax).reshape(-1)[:flat.numel()].view_as(m).to(m.dtype)


def _bnb_4bit(m: torch.Tensor, kind: str, block_size: int) -> torch.Tensor:
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(m.contiguous().float(), blocksize=block_size, quant_type=kind)
    return bnbf.dequantize_4bit(packed, state).to(m.dtype)


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes.functional  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def quantize_dequantize(m: Float[torch.Tensor, "out inp"], scheme: str,
                        config: QuantizationConfig = QuantizationConfig()) -> Float[torch.Tensor, "out inp"]:
    """What a weight-only quantizer stores for an [out, in] matrix, read back in float."""
    with torch.no_grad():
        if scheme == "int8":
            return _quanto_int8(m)
        if scheme == "int4":
            return _quanto_int4(m, config.int4_group_size)
        if scheme in ("nf4", "fp4"):
            use_bnb = config.backend_4bit == "bitsandbytes" or (
                config.backend_4bit == "auto" and bitsandbytes_available())
            return _bnb_4bit(m, scheme, config.block_size) if use_bnb else _codebook_4bit(m, scheme, config.block_size)
    raise ValueError(f"unknown quantization scheme {scheme!r}; choose from {', '.join(SCHEMES)}.")


# ---------------------------------------------------------------------------------------------------------------
# Models and handles
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def quantized_tl(tl: Any, scheme: str, config: QuantizationConfig = QuantizationConfig()) -> Any:
    """A copy of `tl` with its block weight matrices quantized→dequantized and its permanent hooks kept."""
    from obliviate.ensemble import MeanProbabilityTL

    if isinstance(tl, MeanProbabilityTL):  # a SISA aggregate: each constituent quantized as a model of its own
        return MeanProbabilityTL([quantized_tl(member, scheme, config) for member in tl.models]).eval()
    clone = clone_tl(tl)
    params = dict(clone.named_parameters())
    for name in quantizable_parameters(clone, config.include_embeddings):
        w = params[name]
        m = to_linear_layout(name, w.detach().float())
        w.copy_(from_linear_layout(name, quantize_dequantize(m, scheme, config), w.shape).to(w.dtype))
    return clone


def quantized_handle(handle: Any, scheme: str, config: QuantizationConfig = QuantizationConfig()) -> Any:
    """The handle with its TL model quantized (hooks kept); `.hf` is the unquantized original."""
    return with_tl(handle, quantized_tl(handle.tl, scheme, config))


@dataclass
class EditSurvival:
    """How much of one weight's edit delta Δ = W_edited − W_base is left after quantizing both models."""

    projection: float
    """⟨Q(W_e) − Q(W_b), Δ⟩ / ‖Δ‖²: the share of Δ still there along Δ (0: rounded back onto the base
    grid)."""
    norm_ratio: float
    """‖Q(W_e) − Q(W_b)‖ / ‖Δ‖ (above 1 when bin flips add change that is not the edit's)."""
    delta_norm: float
    max_abs_delta: float


@torch.no_grad()
def edit_survival(base: Any, edited: Any, scheme: str, config: QuantizationConfig = QuantizationConfig()
                  ) -> dict[str, EditSurvival]:
    """Per changed weight matrix: how much of the edit survives quantizing base and edited the same way."""
    base_params, edited_params = dict(base.tl.named_parameters()), dict(edited.tl.named_parameters())
    out = {}
    for name in quantizable_parameters(edited.tl, config.include_embeddings):
        delta = to_linear_layout(name, (edited_params[name] - base_params[name]).float())
        squared = float((delta * delta).sum())
        if squared == 0.0:
            continue
        q_base = quantize_dequantize(to_linear_layout(name, base_params[name].float()), scheme, config)
        q_edit = quantize_dequantize(to_linear_layout(name, edited_params[name].float()), scheme, config)
        kept = q_edit - q_base
        out[name] = EditSurvival(projection=float((kept * delta).sum()) / squared,
                                 norm_ratio=float(kept.norm()) / squared ** 0.5, delta_norm=squared ** 0.5,
                                 max_abs_delta=float(delta.abs().max()))
    return out


@dataclass
class QuantizationScores:
    """Per scheme, per target: the quantized model's answer statistics."""

    by_scheme: dict[str, dict[int, TargetScore]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def quantization_scores(handle: Any, facts: Sequence[Fact], config: QuantizationConfig = QuantizationConfig()
                        ) -> QuantizationScores:
    """Quantize `handle` with each scheme (hooks kept) and score the targets' p_true / top-1 / rank."""
    result = QuantizationScores()
    prompts, answers = [f.text for f in facts], [f.target_true for f in facts]
    for scheme in config.schemes:
        start = time.perf_counter()
        quantized = quantized_handle(handle, scheme, config)
        stats = answer_stats(quantized, prompts, answers)
        result.by_scheme[scheme] = {
            f.case_id: TargetScore(f.case_id, float(stats.p_true[i]), float(stats.p_true[i]), bool(stats.top1[i]),
                                   int(stats.rank[i]), {"scheme": scheme})
            for i, f in enumerate(facts)}
        del quantized
        result.timings[scheme] = time.perf_counter() - start
    return result


def _best(scores: QuantizationScores, facts: Sequence[Fact]) -> dict[int, TargetScore]:
    return {f.case_id: max((s[f.case_id] for s in scores.by_scheme.values()), key=lambda t: t.score)
            for f in facts}


def run_quantization(base: Any, edited: Any, facts: Sequence[Fact], oracle: Any | None = None,
                     config: QuantizationConfig = QuantizationConfig()) -> AttackResult:
    """Quantization attack on `edited` (and the same on `oracle`), with R against `base`."""
    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        scores = quantization_scores(handle, facts, config)
        variants = {s: {c: t.score for c, t in per.items()} for s, per in scores.by_scheme.items()}
        timings = {**{f"quantize_{k}": v for k, v in scores.timings.items()}, "total": time.perf_counter() - start}
        return assemble("quantization", "p_true after weight quantization (best scheme per target; hooks kept)",
                        asdict(config), facts, attacked=_best(scores, facts), unlearned=unlearned, before=before,
                        variants=variants, oracle=nested, timings=timings, handle_name=handle.name,
                        min_gap=config.min_gap)

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("quantization", QuantizationConfig)
def quantization_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: QuantizationConfig,
                        ctx: AttackContext) -> AttackResult:
    """Weight quantization (int8 / 4-bit schemes): does rounding the weights bring the answer back?"""
    return run_quantization(base, edited, facts, ctx.oracle, cfg)
