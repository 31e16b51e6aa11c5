"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"), batched.

Protocol of kmeng01/rome `experiments/causal_trace.py` (its numbers below):

- corrupt: Gaussian noise on the token embeddings (TL ``hook_embed``) of the subject tokens only, std =
  ``noise_multiplier`` (3, ROME's ``s3``) × the std of the subjects' embeddings over the fact set; or, with
  ``corruption="replace"``, symmetric token replacement (STR, Zhang & Nanda 2023 "Towards Best Practices of
  Activation Patching"): each corrupted copy swaps the subject's token embeddings for those of another subject of
  the fact set with as many tokens, the same relation and another answer. Gaussian noise of 3σ can push a small
  model's states far off their distribution (on the world models every later position's attention to the noised
  tokens turns to garbage, so no single restoration helps); STR keeps every state on-distribution;
- ``n_samples`` (10) corrupted copies, seeded per fact; score = p(answer) at the last position averaged over them;
- restore, for every (token, layer), the clean value into the corrupted run: ``resid`` = the layer's output hidden
  state (``blocks.L.hook_resid_post``; ROME patches the block output), ``mlp`` / ``attn`` = the sublayer output
  (``hook_mlp_out`` / ``hook_attn_out``) over the window [L − w/2, L + ⌈w/2⌉) clipped, w = 10;
- indirect effect = p(restored) − p(corrupted). Only facts the model gets right (top-1) are traced; the others are
  reported as skipped.

The reference runs one forward per cell (`locate/causal_trace_reference.py` keeps that version for the tests and the
benchmark). Here many cells share a forward as batch rows, and each row computes only what restoration can change:

- a row starts at the first layer its restoration touches, from the cached corrupted residual (layers below are
  exactly the corrupted run);
- a row restoring token t computes positions ≥ t only; earlier positions are causally unaffected, so their keys and
  values come from the corrupted run (a frozen TransformerLens key/value cache entry per layer);
- only the last position is unembedded;
- restoring a token before the subject is a no-op (clean and corrupted agree there exactly), so those cells equal
  the corrupted score and are not run.

The result equals the one-cell-per-forward reference within float error (tests check 1e-5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int

from locate.tokens import SubjectTokens, fact_subject_tokens
from obliviate.facts import Fact

Kind = Literal["resid", "mlp", "attn"]
KINDS: tuple[str, ...] = ("resid", "mlp", "attn")
SITE_HOOKS = {"resid": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}
"""The TransformerLens hook whose value each kind restores, per layer."""


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TraceResult:
    """One fact's trace for one kind: p(answer) with each (token, layer) restored."""

    case_id: int
    kind: str
    """resid (hidden state), mlp or attn."""
    scores: Float[torch.Tensor, "pos layer"]
    """p(answer) with the cell's clean value restored into the corrupted run (NaN where not traced)."""
    low: float
    """p(answer) in the corrupted run (the mean over noise samples)."""
    high: float
    """p(answer) in the clean run."""
    tokens: list[str]
    subject_range: tuple[int, int]
    """[start, end) token positions of the subject."""
    answer: str
    answer_token: int
    window: int
    n_samples: int
    noise_std: float
    seed: int
    corruption: str = "noise"
    """noise (ROME's Gaussian noise) or replace (symmetric token replacement; noise_std is then 0)."""

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[1])

    @property
    def last_subject(self) -> int:
        """ROME's key position: the last subject token."""
        return self.subject_range[1] - 1

    @property
    def indirect_effect(self) -> Float[torch.Tensor, "pos layer"]:
        return self.scores - self.low

    def peak(self) -> tuple[int, int]:
        """(layer, token position) of the largest restored p(answer)."""
        flat = torch.nan_to_num(self.scores, nan=-math.inf).argmax().item()
        position, layer = divmod(int(flat), self.n_layers)
        return layer, position

    def layer_profile(self, position: int | None = None) -> Float[torch.Tensor, " layer"]:
        """Restored p(answer) per layer at one token (default: the last subject token)."""
        return self.scores[self.last_subject if position is None else position]


@dataclass
class SkippedFact:
    """A fact that was not traced, and why (never dropped silently)."""

    case_id: int
    subject: str
    reason: str
    expected: str
    predicted: str = ""


@dataclass
class PeakSummary:
    """Where one kind's peaks sit over the traced facts."""

    kind: str
    n_facts: int
    frac_peak_at_last_subject: float
    """Share of facts whose global peak is at the last subject token."""
    frac_peak_in_subject: float
    mean_peak_layer: float
    """Mean layer of the global peak."""
    mean_peak_depth: float
    """Mean of peak layer / n_layers."""
    mean_last_subject_peak_layer: float
    """Mean layer of the maximum of the last-subject-token profile (ROME's curve)."""
    mean_max_effect: float
    """Mean of (peak p − corrupted p)."""


@dataclass
class TraceReport:
    """Traces of a fact set: one dict kind → TraceResult per traced fact, plus the skipped facts."""

    noise_std: float
    noise_multiplier: float
    n_samples: int
    window: int
    seed: int
    backend: str
    corruption: str = "noise"
    traces: list[dict[str, TraceResult]] = field(default_factory=list)
    replacements: dict[int, list[list[int]]] = field(default_factory=dict)
    """case_id → the replacement subjects' token ids (corruption="replace"), for AtP to reuse."""
    skipped: list[SkippedFact] = field(default_factory=list)

    def summary(self, kind: str) -> PeakSummary:
        results = [t[kind] for t in self.traces if kind in t]
        if not results:
            nan = float("nan")
            return PeakSummary(kind, 0, nan, nan, nan, nan, nan, nan)
        peaks = [r.peak() for r in results]
        n_layers = results[0].n_layers
        profile_peaks = [int(torch.nan_to_num(r.layer_profile(), nan=-math.inf).argmax()) for r in results]
        return PeakSummary(
            kind=kind, n_facts=len(results),
            frac_peak_at_last_subject=sum(p == r.last_subject for (_, p), r in zip(peaks, results)) / len(results),
            frac_peak_in_subject=sum(r.subject_range[0] <= p < r.subject_range[1]
                                     for (_, p), r in zip(peaks, results)) / len(results),
            mean_peak_layer=sum(layer for layer, _ in peaks) / len(results),
            mean_peak_depth=sum(layer / n_layers for layer, _ in peaks) / len(results),
            mean_last_subject_peak_layer=sum(profile_peaks) / len(results),
            mean_max_effect=sum(float(torch.nan_to_num(r.scores, nan=-math.inf).max()) - r.low
                                for r in results) / len(results),
        )


# ----------------------------------------------------------------------------------------------------------------
# Noise
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def subject_embedding_std(handle, facts: Sequence[Fact], *, in_context: bool = False) -> float:
    """Std over all elements of the subjects' token embeddings over the fact set (ROME `collect_embedding_std`).

    ROME embeds each subject tokenised on its own (no BOS); `in_context=True` uses the subject's tokens as they
    occur inside the prompt instead (with their leading space), i.e. exactly the embeddings that get noised.
    """
    if not facts:
        raise ValueError("subject_embedding_std needs at least one fact.")
    model = handle.tl
    rows = []
    for fact in facts:
        if in_context:
            subject = fact_subject_tokens(handle, fact)
            ids = subject.token_ids[subject.start:subject.end]
        else:
            ids = handle.tokenizer(fact.subject, add_special_tokens=False)["input_ids"]
        rows.append(model.embed(torch.tensor([ids], device=model.cfg.device))[0])
    return torch.cat(rows).std().item()


def fact_seed(seed: int, case_id: int) -> int:
    """The per-fact noise seed: the same fact always gets the same noise, whatever else is traced."""
    return (seed * 1_000_003 + case_id) % (2**63 - 1)


def corruption_noise(n_samples: int, n_tokens: int, d_model: int, std: float, *, seed: int,
                     case_id: int) -> Float[torch.Tensor, "sample subject d_model"]:
    """The Gaussian noise added to the subject's token embeddings, one slice per corrupted sample."""
    generator = torch.Generator().manual_seed(fact_seed(seed, case_id))
    return torch.randn(n_samples, n_tokens, d_model, generator=generator) * std


def replacement_subjects(handle, fact: Fact, pool: Sequence[Fact], n: int, *, seed: int = 0) -> list[list[int]]:
    """Token ids of up to `n` other subjects that can stand in for `fact.subject` in its prompt (STR corruption).

    A candidate comes from `pool`, has another subject, the same relation (when both facts name one) and another
    true answer, and tokenises in the prompt to as many tokens as the subject with every token outside the subject
    unchanged — so the replaced prompt differs from the clean one at the subject's positions only. Seeded per fact.
    """
    import random

    subject = fact_subject_tokens(handle, fact)
    before, after = subject.token_ids[:subject.start], subject.token_ids[subject.end:]
    seen, candidates = {fact.subject}, []
    for other in pool:
        if other.subject in seen or other.target_true == fact.target_true:
            continue
        if fact.relation_id and other.relation_id and other.relation_id != fact.relation_id:
            continue
        seen.add(other.subject)
        swapped = fact_subject_tokens(handle, dataclasses.replace(fact, subject=other.subject))
        if (swapped.end - swapped.start == subject.end - subject.start
                and swapped.token_ids[:swapped.start] == before and swapped.token_ids[swapped.end:] == after):
            candidates.append(swapped.token_ids[swapped.start:swapped.end])
    random.Random(fact_seed(seed, fact.case_id)).shuffle(candidates)
    if not candidates:
        raise ValueError(f"fact {fact.case_id} ({fact.subject!r}): no subject in the pool can replace it (same "
                         f"token count and relation, another answer); use corruption='noise'.")
    return candidates[:n]


def corruption_label(noise_std: float, replacements: Sequence[Sequence[int]] | None) -> tuple[float, str]:
    """The (noise_std, corruption) a trace records: STR has no noise std."""
    return (0.0, "replace") if replacements is not None else (noise_std, "noise")


@torch.no_grad()
def subject_corruption(handle, fact: Fact, subject: SubjectTokens, *, noise_std: float, n_samples: int, seed: int,
                       replacements: Sequence[Sequence[int]] | None = None) -> Float[torch.Tensor,
                                                                                       "sample subject d_model"]:
    """What each corrupted copy adds to the subject's token embeddings.

    Gaussian noise (`corruption_noise`) by default; with `replacements` (token ids from `replacement_subjects`),
    the difference embed(replacement) − embed(subject), so adding it swaps the subject for another one exactly.
    """
    n_tokens = subject.end - subject.start
    if replacements is None:
        return corruption_noise(n_samples, n_tokens, int(handle.tl.cfg.d_model), noise_std, seed=seed,
                                case_id=fact.case_id)
    if any(len(r) != n_tokens for r in replacements) or not replacements:
        raise ValueError(f"fact {fact.case_id}: every replacement needs {n_tokens} tokens, like the subject.")
    ids = [subject.token_ids[subject.start:subject.end], *map(list, replacements)]
    embedded = handle.tl.embed(torch.tensor(ids, device=handle.tl.cfg.device)).cpu()
    return embedded[1:] - embedded[:1]


def window_layers(layer: int, n_layers: int, window: int) -> range:
    """ROME's restoration window for `layer`: [L − w//2, L + ⌈w/2⌉) clipped to the model."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


# ----------------------------------------------------------------------------------------------------------------
# Clean and corrupted runs (shared with attribution patching)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CorruptedRuns:
    """A fact's clean run and its corrupted copies, with what restoration needs from each."""

    tokens: Int[torch.Tensor, " pos"]
    subject: SubjectTokens
    answer_token: int
    noise: Float[torch.Tensor, "sample subject d_model"]
    high: float
    low: float
    clean_top1: int
    clean: dict[str, list[torch.Tensor]]
    """kind → per layer, the clean [pos, d_model] value restoration copies."""
    corrupt_resid_pre: list[torch.Tensor]
    """Per layer, the corrupted [sample, pos, d_model] residual entering the layer; index n_layers = final."""
    corrupt_kv: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer, the corrupted keys and values [sample, pos, heads, d_head] as attention caches them."""


def noise_hook(noise: torch.Tensor, start: int, end: int, first_row: int = 1):
    """A hook_embed function adding `noise` to the subject embeddings of rows first_row… (one sample per row)."""

    def hook(embed: torch.Tensor, hook=None) -> torch.Tensor:
        embed = embed.clone()
        rows = embed.shape[0] - first_row
        repeats = rows // noise.shape[0]
        embed[first_row:, start:end] += noise.to(embed).repeat(repeats, 1, 1)
        return embed

    return hook


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for softmax (bf16/fp16 models), float64 kept (precision tests)."""
    return x if x.dtype == torch.float64 else x.float()


def score_dtype(model) -> torch.dtype:
    """Scores are kept in float32, or float64 for a float64 model."""
    return torch.float64 if model.cfg.dtype == torch.float64 else torch.float32


def _final_logits(model, resid_last: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row vocab"]:
    """Logits from the final residual at the last position (ln_final, unembed, softcap: TL's forward)."""
    from transformer_lens.utilities import apply_softcap

    x = resid_last[:, None, :]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    return apply_softcap(model.unembed(x), model.cfg.output_logits_soft_cap)[:, 0]


def _final_probs(model, resid_last: Float[torch.Tensor, "row d_model"], answer: int) -> Float[torch.Tensor, " row"]:
    return upcast(_final_logits(model, resid_last)).softmax(-1)[:, answer]


def _check_supported(model) -> None:
    if model.cfg.positional_embedding_type == "shortformer":
        raise NotImplementedError("causal tracing: shortformer positional embeddings are not supported.")


@torch.no_grad()
def corrupted_runs(handle, fact: Fact, *, noise_std: float, n_samples: int = 10, seed: int = 0,
                   kinds: Sequence[str] = KINDS,
                   replacements: Sequence[Sequence[int]] | None = None) -> CorruptedRuns:
    """One batched forward: row 0 clean, rows 1… corrupted; caches the clean sites and corrupted residuals/KV.

    `replacements` (see `replacement_subjects`) switches the corruption to STR, one copy per replacement."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    model = handle.tl
    _check_supported(model)
    subject = fact_subject_tokens(handle, fact)
    tokens = torch.tensor(subject.token_ids, device=model.cfg.device)
    noise = subject_corruption(handle, fact, subject, noise_std=noise_std, n_samples=n_samples, seed=seed,
                               replacements=replacements)
    n_samples = noise.shape[0]
    answer = handle.answer_token(fact.target_true)
    batch = tokens[None].repeat(1 + n_samples, 1)
    n_layers = model.cfg.n_layers
    wanted = {SITE_HOOKS[k].format(layer) for k in kinds for layer in range(n_layers)}
    saved: dict[str, torch.Tensor] = {}

    def save(value: torch.Tensor, hook) -> None:
        saved[hook.name] = value.detach()

    fwd_hooks = [("hook_embed", noise_hook(noise, subject.start, subject.end))]
    fwd_hooks += [(name, save) for name in wanted]
    with model.hooks(fwd_hooks=fwd_hooks):
        # attention_mask=ones: never let a pad id that happens to occur in the prompt mask a real token
        resid, _, _, _ = model.input_to_embed(batch, attention_mask=torch.ones_like(batch))
        entries = [TransformerLensKeyValueCacheEntry.init_cache_entry(model.cfg, resid.device, batch.shape[0])
                   for _ in range(n_layers)]
        resid_pre = []
        for layer, block in enumerate(model.blocks):
            resid_pre.append(resid[1:])
            resid = block(resid, past_kv_cache_entry=entries[layer])
        resid_pre.append(resid[1:])
    logits = upcast(_final_logits(model, resid[:, -1]))
    probs = logits.softmax(-1)[:, answer]
    return CorruptedRuns(
        tokens=tokens, subject=subject, answer_token=answer, noise=noise,
        high=probs[0].item(), low=probs[1:].mean().item(), clean_top1=int(logits[0].argmax()),
        clean={k: [saved[SITE_HOOKS[k].format(layer)][0] for layer in range(n_layers)] for k in kinds},
        corrupt_resid_pre=resid_pre,
        corrupt_kv=[(e.past_keys[1:], e.past_values[1:]) for e in entries],
    )


# ----------------------------------------------------------------------------------------------------------------
# The batched trace
# ----------------------------------------------------------------------------------------------------------------


def _start_layer(kind: str, layer: int, n_layers: int, window: int) -> int:
    """The first layer a row restoring (kind, layer) must compute; below it the row equals the corrupted run."""
    return layer + 1 if kind == "resid" else window_layers(layer, n_layers, window).start


@torch.no_grad()
def _trace_token(model, runs: CorruptedRuns, kind: str, position: int, layers: Sequence[int],
                 window: int) -> Float[torch.Tensor, " cell"]:
    """p(answer) for restoring (kind, `position`, L) for each L in `layers`, in one layer-by-layer batched pass."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    n_layers = model.cfg.n_layers
    n_samples = runs.noise.shape[0]
    t = position
    starts = [_start_layer(kind, layer, n_layers, window) for layer in layers]
    order = sorted(range(len(layers)), key=lambda i: starts[i])
    joined: list[int] = []  # cell indices in row-block order
    resid: torch.Tensor | None = None
    patch_rows: dict[int, torch.Tensor] = {}

    def patch(value: torch.Tensor, hook) -> torch.Tensor:
        rows = patch_rows.get(hook.layer())
        if rows is None or rows.numel() == 0:
            return value
        value = value.clone()
        value[rows, 0] = runs.clean[kind][hook.layer()][t].to(value)
        return value

    def join(layer_at: int) -> None:
        nonlocal resid
        new = [i for i in order if starts[i] == layer_at]
        if not new:
            return
        blocks = []
        for i in new:
            state = runs.corrupt_resid_pre[layer_at][:, t:].clone()
            if kind == "resid":  # restore the output of layer `layers[i]` = the input of layer_at
                state[:, 0] = runs.clean["resid"][layers[i]][t]
            blocks.append(state)
        joined.extend(new)
        fresh = torch.cat(blocks)
        resid = fresh if resid is None else torch.cat([resid, fresh])

    hooks = []
    if kind != "resid":
        hooks = [(SITE_HOOKS[kind].format(layer), patch) for layer in range(n_layers)]
    with model.hooks(fwd_hooks=hooks):
        for layer_at in range(min(starts), n_layers):
            join(layer_at)
            if resid is None:
                continue
            if kind != "resid":
                inside = torch.tensor([layer_at in window_layers(layers[i], n_layers, window) for i in joined])
                patch_rows[layer_at] = torch.nonzero(inside.repeat_interleave(n_samples))[:, 0]
            keys, values = runs.corrupt_kv[layer_at]
            rows = resid.shape[0] // n_samples
            entry = TransformerLensKeyValueCacheEntry(past_keys=keys[:, :t].repeat(rows, 1, 1, 1),
                                                      past_values=values[:, :t].repeat(rows, 1, 1, 1),
                                                      frozen=True)
            resid = model.blocks[layer_at](resid, past_kv_cache_entry=entry)
    join(n_layers)  # resid restored at the last layer: nothing left to run
    assert resid is not None
    probs = _final_probs(model, resid[:, -1], runs.answer_token).view(len(joined), n_samples).mean(-1)
    out = torch.empty(len(layers), dtype=probs.dtype)
    out[torch.tensor(joined)] = probs.cpu()
    return out


def trace_fact(handle, fact: Fact, *, noise_std: float, kinds: Sequence[str] = KINDS, n_samples: int = 10,
               window: int = 10, seed: int = 0, positions: Sequence[int] | None = None,
               layers: Sequence[int] | None = None, max_rows: int = 1024, runs: CorruptedRuns | None = None,
               replacements: Sequence[Sequence[int]] | None = None,
               show_progress: bool = False) -> dict[str, TraceResult]:
    """Trace one fact for each kind (it is not checked that the model knows the fact; `trace_facts` does).

    `positions` / `layers` restrict the traced cells (the others are NaN); `max_rows` bounds the batch rows of one
    forward (cells × samples); `replacements` corrupts by STR instead of noise (one sample per replacement).
    """
    model = handle.tl
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown trace kind {kind!r}; choose from {', '.join(KINDS)}.")
    if runs is None:
        runs = corrupted_runs(handle, fact, noise_std=noise_std, n_samples=n_samples, seed=seed, kinds=kinds,
                              replacements=replacements)
    n_samples = runs.noise.shape[0]
    noise_std, corruption = corruption_label(noise_std, replacements)
    n_layers, n_pos = model.cfg.n_layers, len(runs.tokens)
    positions = list(range(n_pos)) if positions is None else [p % n_pos for p in positions]
    layers = list(range(n_layers)) if layers is None else [l % n_layers for l in layers]
    cells_per_pass = max(1, max_rows // n_samples)
    token_strings = [handle.tokenizer.decode([i]) for i in runs.tokens.tolist()]
    results = {}
    jobs = [(kind, t) for kind in kinds for t in positions if t >= runs.subject.start]
    progress = _progress(len(jobs), show_progress, f"trace {fact.case_id}")
    for kind in kinds:
        scores = torch.full((n_pos, n_layers), float("nan"), dtype=score_dtype(model))
        for t in positions:
            if t < runs.subject.start:  # clean == corrupted before the subject: restoring changes nothing
                scores[t, layers] = runs.low
                continue
            for start in range(0, len(layers), cells_per_pass):
                chunk = layers[start:start + cells_per_pass]
                scores[t, chunk] = _trace_token(model, runs, kind, t, chunk, window)
            progress.update()
        results[kind] = TraceResult(
            case_id=fact.case_id, kind=kind, scores=scores, low=runs.low, high=runs.high, tokens=token_strings,
            subject_range=(runs.subject.start, runs.subject.end), answer=fact.target_true,
            answer_token=runs.answer_token, window=window, n_samples=n_samples, noise_std=noise_std, seed=seed,
            corruption=corruption)
    progress.close()
    return results


def _progress(total: int, show: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show, leave=False)


def known_facts(handle, facts: Sequence[Fact]) -> tuple[list[Fact], list[SkippedFact]]:
    """Split facts into those the model gets right (top-1 = first token of " " + target_true) and the rest."""
    from obliviate.metrics import last_token_logprobs

    if not facts:
        return [], []
    top1 = last_token_logprobs(handle, [f.text for f in facts]).argmax(-1).tolist()
    known, skipped = [], []
    for fact, predicted in zip(facts, top1):
        if predicted == handle.answer_token(fact.target_true):
            known.append(fact)
        else:
            skipped.append(SkippedFact(case_id=fact.case_id, subject=fact.subject, reason="not top-1 correct",
                                       expected=fact.target_true, predicted=handle.tokenizer.decode([predicted])))
    return known, skipped


def trace_facts(handle, facts: Sequence[Fact], *, kinds: Sequence[str] = KINDS, noise_multiplier: float = 3.0,
                noise_std: float | None = None, n_noise_samples: int = 10, window: int = 10, seed: int = 0,
                backend: str = "transformer_lens", max_rows: int = 1024, corruption: str = "noise",
                replacement_pool: Sequence[Fact] | None = None, show_progress: bool = False) -> TraceReport:
    """Trace every fact the model knows; the noise std comes from the whole fact set unless given.

    `backend`: "transformer_lens" (the batched trace above) or "nnsight" (locate/nnsight_backend.py).
    `corruption`: "noise" (ROME) or "replace" (STR: `n_noise_samples` replacement subjects per fact, drawn from
    `replacement_pool`, default `facts`).
    """
    if corruption not in ("noise", "replace"):
        raise ValueError(f"corruption {corruption!r}: use 'noise' (ROME) or 'replace' (symmetric token replacement).")
    if corruption == "replace":
        noise_std = 0.0
    elif noise_std is None:
        noise_std = noise_multiplier * subject_embedding_std(handle, facts)
    known, skipped = known_facts(handle, facts)
    report = TraceReport(noise_std=noise_std, noise_multiplier=noise_multiplier, n_samples=n_noise_samples,
                         window=window, seed=seed, backend=backend, corruption=corruption, skipped=skipped)
    if backend == "transformer_lens":
        tracer = trace_fact
    elif backend == "nnsight":
        from locate.nnsight_backend import nnsight_trace_fact as tracer
    else:
        raise ValueError(f"unknown tracing backend {backend!r}; use transformer_lens or nnsight.")
    from tqdm.auto import tqdm

    pool = list(facts if replacement_pool is None else replacement_pool)
    for fact in tqdm(known, desc="causal trace", disable=not show_progress):
        replacements = None
        if corruption == "replace":
            replacements = report.replacements[fact.case_id] = replacement_subjects(handle, fact, pool,
                                                                                  n_noise_samples, seed=seed)
        report.traces.append(tracer(handle, fact, noise_std=noise_std, kinds=kinds, n_samples=n_noise_samples,
                                    window=window, seed=seed, max_rows=max_rows, replacements=replacements))
    return report
