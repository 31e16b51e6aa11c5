"""Causal tracing and activation collection through nnsight (Fiotto-Kaufman et al. 2025, ndif-team/nnsight 0.8).

The same ROME protocol as `locate/causal_trace.py`, run on the Hugging Face model through ``handle.nnsight`` instead
of TransformerLens hooks: the path for models TransformerLens does not cover, and, with ``remote=True`` on NDIF,
for models too large for this machine. Sites use TransformerLens's hook names as the vocabulary; `SITE_MAPS` says
where each lives in a Hugging Face architecture (GPT-2: ``transformer.h[i]``, ``.attn``, ``.mlp``; Llama-style:
``model.layers[i]``, ``.self_attn``, ``.mlp``).

The trace batches cells as batch rows, one full forward per chunk of cells (nnsight edits module outputs in the
forward's own order, so the TransformerLens version's layer-skipping is not available here). Cells before the
subject are the corrupted score exactly, as in the TransformerLens trace. nnsight runs a ``with model.trace(...)``
body from this file's source, so every interventions lives in a named function here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import nnsight
import torch
from jaxtyping import Float

from locate.causal_trace import KINDS, TraceResult, corruption_label, subject_corruption, window_layers
from locate.tokens import fact_subject_tokens
from obliviate.facts import Fact


@dataclass(frozen=True)
class SiteMap:
    """Where the TransformerLens sites live in one Hugging Face architecture (dotted module paths)."""

    embed: str
    """Token embedding (TL hook_embed): its output gets the noise."""
    layers: str
    """The ModuleList of decoder blocks; a block's input is resid_pre, its output resid_post."""
    attn: str
    """Attention submodule of a block; output[0] is hook_attn_out."""
    mlp: str
    """MLP submodule of a block; its output is hook_mlp_out."""
    lm_head: str


_GPT2 = SiteMap(embed="transformer.wte", layers="transformer.h", attn="attn", mlp="mlp", lm_head="lm_head")
_LLAMA = SiteMap(embed="model.embed_tokens", layers="model.layers", attn="self_attn", mlp="mlp", lm_head="lm_head")
# Gemma 3 normalises each sub-layer's output before the residual adds it: TL's hook_attn_out / hook_mlp_out are the
# outputs of those norms, not of self_attn / mlp. Its embedding module already applies the √d_model scale TL folds
# into W_E, so the noise lands on the same vectors.
_GEMMA3 = SiteMap(embed="model.embed_tokens", layers="model.layers", attn="post_attention_layernorm",
                  mlp="post_feedforward_layernorm", lm_head="lm_head")
SITE_MAPS: dict[str, SiteMap] = {
    "gpt2": _GPT2,
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gemma": _LLAMA, "gemma2": _LLAMA,
    "olmo": _LLAMA, "phi3": _LLAMA, "gemma3_text": _GEMMA3,
    "gpt_neox": SiteMap(embed="gpt_neox.embed_in", layers="gpt_neox.layers", attn="attention", mlp="mlp",
                        lm_head="embed_out"),
}

_SITE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|attn_out|mlp_out|resid_post)$")
_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}  # execution order inside a block
_KIND_SITE = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


def site_map(handle) -> SiteMap:
    model_type = handle.hf.config.model_type
    if model_type not in SITE_MAPS:
        raise NotImplementedError(f"nnsight backend: no site map for HF model_type {model_type!r}; add one to "
                                  f"locate/nnsight_backend.py SITE_MAPS (known: {', '.join(SITE_MAPS)}).")
    return SITE_MAPS[model_type]


def _module(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _parse(site: str) -> tuple[int, str]:
    match = _SITE.match(site)
    if not match:
        raise ValueError(f"nnsight backend: unsupported site {site!r}; use blocks.L.hook_resid_pre / hook_attn_out "
                         f"/ hook_mlp_out / hook_resid_post.")
    return int(match.group(1)), match.group(2)


def _hidden(output):
    """A block's or attention's output may be a tuple (hidden, ...) depending on the architecture/version."""
    return output[0] if isinstance(output, tuple) else output


# ----------------------------------------------------------------------------------------------------------------
# nnsight trace bodies (kept small; each `with model.trace` runs its body interleaved with the real forward)
# ----------------------------------------------------------------------------------------------------------------


def _run_sites(model, sites: SiteMap, input_ids, wanted: list[tuple[int, str]], attention_mask=None,
               noise: torch.Tensor | None = None, span: tuple[int, int] = (0, 0), noise_from_row: int = 0,
               patches: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
               answer: int | None = None):
    """One forward: optional subject noise, optional patches {(layer, site): (rows, positions, values)}, and the
    saved values of `wanted` sites (plus p(answer) at the last position when `answer` is given)."""
    patches = patches or {}
    events = sorted(set(wanted) | set(patches), key=lambda e: (e[0], _ORDER[e[1]]))
    inputs = {"input_ids": input_ids} if attention_mask is None else \
        {"input_ids": input_ids, "attention_mask": attention_mask}
    layers = _module(model, sites.layers)
    with model.trace(inputs):
        # the body runs in its own frame: only saved objects come back (a saved dict, filled with raw values)
        saved = nnsight.save({})
        probs = nnsight.save([])
        if noise is not None:
            embed = _module(model, sites.embed).output
            embed[noise_from_row:, span[0]:span[1]] += noise
        for layer, site in events:
            block = layers[layer]
            if site == "resid_pre":
                value = block.input
            elif site == "attn_out":
                value = _hidden(_module(block, sites.attn).output)
            elif site == "mlp_out":
                value = _module(block, sites.mlp).output
            else:
                value = _hidden(block.output)
            if (layer, site) in patches:
                rows, positions, values = patches[(layer, site)]
                value[rows, positions] = values
            if (layer, site) in wanted:
                saved[(layer, site)] = value.detach().clone()
        if answer is not None:
            probs.append(_module(model, sites.lm_head).output[:, -1].float().softmax(-1)[:, answer])
    return saved, (probs[0] if probs else None)


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_activations(handle, texts: Sequence[str], sites: Sequence[str], *,
                        batch_size: int = 16) -> dict[str, list[Float[torch.Tensor, "pos d_model"]]]:
    """Activations at TransformerLens-named sites, collected through nnsight: site → one [pos, d] tensor per text.

    Texts are tokenised with the handle's BOS convention and right-padded within a batch (causal attention keeps
    the padding invisible to the real positions, which are cut back out).
    """
    wanted = [_parse(s) for s in sites]
    model, sites_map = handle.nnsight, site_map(handle)
    pad = handle.tokenizer.pad_token_id if handle.tokenizer.pad_token_id is not None else 0
    out: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    for start in range(0, len(texts), batch_size):
        rows = [handle.to_tokens(t)[0] for t in texts[start:start + batch_size]]
        lengths = [len(r) for r in rows]
        ids = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        saved, _ = _run_sites(model, sites_map, ids.to(handle.hf.device), wanted, attention_mask=mask)
        for site, key in zip(sites, wanted):
            for i, length in enumerate(lengths):
                out[site].append(saved[key][i, :length].cpu())
    return out


@torch.no_grad()
def nnsight_trace_fact(handle, fact: Fact, *, noise_std: float, kinds: Sequence[str] = ("resid", "mlp", "attn"),
                       n_samples: int = 10, window: int = 10, seed: int = 0, positions: Sequence[int] | None = None,
                       layers: Sequence[int] | None = None, max_rows: int = 512,
                       replacements: Sequence[Sequence[int]] | None = None,
                       show_progress: bool = False) -> dict[str, TraceResult]:
    """ROME's causal trace of one fact through nnsight; same result type and corruption as `trace_fact`."""
    from tqdm.auto import tqdm

    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown trace kind {kind!r}; choose from {', '.join(KINDS)}.")
    model, sites = handle.nnsight, site_map(handle)
    n_layers = handle.hf.config.num_hidden_layers
    subject = fact_subject_tokens(handle, fact)
    tokens = torch.tensor(subject.token_ids, device=handle.hf.device)
    noise = subject_corruption(handle, fact, subject, noise_std=noise_std, n_samples=n_samples, seed=seed,
                               replacements=replacements).to(handle.hf.device)
    n_samples = noise.shape[0]
    noise_std, corruption = corruption_label(noise_std, replacements)
    answer = handle.answer_token(fact.target_true)
    span = (subject.start, subject.end)
    wanted = [(layer, _KIND_SITE[k]) for k in kinds for layer in range(n_layers)]
    clean, probs = _run_sites(model, sites, tokens[None].repeat(1 + n_samples, 1), wanted, noise=noise, span=span,
                              noise_from_row=1, answer=answer)
    high, low = probs[0].item(), probs[1:].mean().item()
    n_pos = len(tokens)
    positions = list(range(n_pos)) if positions is None else [p % n_pos for p in positions]
    layers = list(range(n_layers)) if layers is None else [l % n_layers for l in layers]
    cells_per_pass = max(1, max_rows // n_samples)
    results = {}
    token_strings = [handle.tokenizer.decode([i]) for i in subject.token_ids]
    for kind in kinds:
        scores = torch.full((n_pos, n_layers), float("nan"))
        for t in positions:
            if t < subject.start:  # clean == corrupted before the subject: restoring changes nothing
                scores[t, layers] = low
        cells = [(t, layer) for t in positions if t >= subject.start for layer in layers]
        for start in tqdm(range(0, len(cells), cells_per_pass), desc=f"nnsight trace {fact.case_id} {kind}",
                          disable=not show_progress, leave=False):
            chunk = cells[start:start + cells_per_pass]
            patches = _cell_patches(kind, chunk, clean, n_samples, n_layers, window)
            batch = tokens[None].repeat(len(chunk) * n_samples, 1)
            _, chunk_probs = _run_sites(model, sites, batch, [], noise=noise.repeat(len(chunk), 1, 1), span=span,
                                        patches=patches, answer=answer)
            mean = chunk_probs.view(len(chunk), n_samples).mean(-1).float().cpu()
            for (t, layer), p in zip(chunk, mean.tolist()):
                scores[t, layer] = p
        results[kind] = TraceResult(
            case_id=fact.case_id, kind=kind, scores=scores, low=low, high=high, tokens=token_strings,
            subject_range=span, answer=fact.target_true, answer_token=answer, window=window, n_samples=n_samples,
            noise_std=noise_std, seed=seed, corruption=corruption)
    return results


def _cell_patches(kind: str, cells: list[tuple[int, int]], clean: dict, n_samples: int, n_layers: int,
                  window: int) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each (layer, site): which batch rows get which clean values at which positions."""
    site = _KIND_SITE[kind]
    by_layer: dict[int, tuple[list[int], list[int]]] = {}
    for index, (t, layer) in enumerate(cells):
        restored = [layer] if kind == "resid" else window_layers(layer, n_layers, window)
        for patched in restored:
            rows, positions = by_layer.setdefault(patched, ([], []))
            block = range(index * n_samples, (index + 1) * n_samples)
            rows.extend(block)
            positions.extend([t] * n_samples)
    patches = {}
    for layer, (rows, positions) in by_layer.items():
        rows_t, pos_t = torch.tensor(rows), torch.tensor(positions)
        values = clean[(layer, site)][0][pos_t]
        patches[(layer, site)] = (rows_t.to(values.device), pos_t.to(values.device), values)
    return patches
