"""Residual-stream activations at chosen token positions, at every depth, through TransformerLens hooks.

Depth convention (the probes' and the PGA paper's): depth 0 is the embedding (``blocks.0.hook_resid_pre``) and
depth d ≥ 1 is the output of block d − 1 (``blocks.{d-1}.hook_resid_post``), so a model with L blocks has L + 1
depths. This is Hugging Face's ``output_hidden_states`` indexing, except at the last depth: HF hands back the
final hidden state *after* the final norm there, we keep the raw residual (what a hook on the block output sees
and what an inference-time projector edits).

Activations are read by capture hooks added after any hooks already on the model (``obliviate.hooks.applied`` /
``attach_permanently``), so an edited model with interventions is read as it behaves. Batches are right-padded:
under causal attention the padding never reaches a real position, and positions are taken per text from its own
length, so results do not depend on the batch composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float

from obliviate.facts import Fact
from obliviate.metrics import encode


def depth_hook_name(depth: int) -> str:
    """The TransformerLens hook that holds the residual at `depth` (0 = embedding)."""
    if depth < 0:
        raise ValueError(f"depth {depth} < 0; depth 0 is the embedding, d ≥ 1 is block d − 1's output.")
    return "blocks.0.hook_resid_pre" if depth == 0 else f"blocks.{depth - 1}.hook_resid_post"


def n_depths(handle) -> int:
    """Number of residual depths of the handle's model: n_layers + 1."""
    return int(handle.tl.cfg.n_layers) + 1


def _token_rows(handle, texts: Sequence[str], max_tokens: int | None) -> list[list[int]]:
    rows = [encode(handle, t) for t in texts]
    if max_tokens is not None:
        rows = [r[:max_tokens] for r in rows]  # keep the first tokens, as a tokenizer's truncation does
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise ValueError(f"text {empty[0]} ({texts[empty[0]]!r}) tokenises to nothing; give non-empty texts.")
    return rows


def _resolve_positions(rows: list[list[int]], positions: Literal["last"] | Sequence[int]) -> list[int]:
    if isinstance(positions, str):
        if positions != "last":
            raise ValueError(f"positions={positions!r}; give 'last' or one token index per text.")
        return [len(r) - 1 for r in rows]
    if len(positions) != len(rows):
        raise ValueError(f"{len(positions)} positions for {len(rows)} texts; give one token index per text.")
    resolved = []
    for i, (row, pos) in enumerate(zip(rows, positions)):
        index = pos + len(row) if pos < 0 else pos
        if not 0 <= index < len(row):
            raise IndexError(f"text {i}: position {pos} is outside its {len(row)} tokens.")
        resolved.append(int(index))
    return resolved


@torch.no_grad()
def collect_residuals(
    handle,
    texts: Sequence[str],
    *,
    positions: Literal["last"] | Sequence[int] = "last",
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    show_progress: bool = False,
) -> Float[torch.Tensor, "depth n d_model"]:
    """The residual at each requested depth, at one token position per text.

    `positions` is "last" (each text's last real token) or one token index per text (negative counts from the
    end of that text's tokens, BOS included when the handle prepends one). `layers` lists the depths to return
    (0 = embedding, d = block d − 1's output; None = all L + 1 depths), in the order given. `max_tokens` keeps
    only each text's first tokens (the memorisation probe reads at most 96). Returns float32 on the CPU.
    """
    depths = list(range(n_depths(handle))) if layers is None else [int(d) for d in layers]
    if not depths:
        raise ValueError("layers is empty; give at least one depth.")
    if max(depths) >= n_depths(handle):
        raise ValueError(f"depth {max(depths)} does not exist; {handle.name} has depths 0..{n_depths(handle) - 1}.")
    return collect_at_hooks(handle, texts, [depth_hook_name(d) for d in depths], positions=positions,
                            batch_size=batch_size, max_tokens=max_tokens, show_progress=show_progress)


def _stop_layer(hook_names: Sequence[str], n_layers: int) -> int | None:
    """The smallest stop_at_layer that still runs every hook (None when one lies outside the blocks)."""
    blocks = []
    for name in hook_names:
        parts = name.split(".")
        if parts[0] != "blocks" or not parts[1].isdigit():
            return None
        blocks.append(int(parts[1]))
    return min(max(blocks) + 1, n_layers)


@torch.no_grad()
def collect_at_hooks(
    handle,
    texts: Sequence[str],
    hook_names: Sequence[str],
    *,
    positions: Literal["last"] | Sequence[int] = "last",
    batch_size: int = 32,
    max_tokens: int | None = None,
    show_progress: bool = False,
) -> Float[torch.Tensor, "hook n d"]:
    """Activations at any TransformerLens hooks (of equal width), at one token position per text.

    The capture hooks run after hooks already on the model, so interventions are seen. See `collect_residuals`
    for `positions` and `max_tokens`.
    """
    model = handle.tl
    rows = _token_rows(handle, texts, max_tokens)
    index = _resolve_positions(rows, positions)
    pad_id = handle.tokenizer.pad_token_id or 0
    # Stop after the deepest block we read: the unembedding is the costliest matmul of small models.
    stop = _stop_layer(hook_names, int(model.cfg.n_layers))
    out: torch.Tensor | None = None
    starts = range(0, len(rows), batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="activations", total=(len(rows) + batch_size - 1) // batch_size)
    for start in starts:
        batch_rows = rows[start:start + batch_size]
        width = max(len(r) for r in batch_rows)
        tokens = torch.full((len(batch_rows), width), pad_id, dtype=torch.long)
        for i, row in enumerate(batch_rows):
            tokens[i, : len(row)] = torch.tensor(row)
        pos = torch.tensor(index[start:start + len(batch_rows)])
        arange = torch.arange(len(batch_rows))
        picked: dict[int, torch.Tensor] = {}

        def capture(slot: int):
            def hook(activation: torch.Tensor, hook=None) -> None:
                picked[slot] = activation[arange.to(activation.device),
                                          pos.to(activation.device)].detach().float().cpu()

            return hook

        fwd_hooks = [(name, capture(slot)) for slot, name in enumerate(hook_names)]
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=fwd_hooks, stop_at_layer=stop)
        if out is None:
            out = torch.empty(len(hook_names), len(rows), picked[0].shape[-1])
        for slot in range(len(hook_names)):
            out[slot, start:start + len(batch_rows)] = picked[slot]
    assert out is not None
    return out


def last_subject_token_positions(handle, facts: Sequence[Fact]) -> list[int]:
    """Token index of each fact's last subject token in `fact.text`, with the handle's BOS convention.

    Delegates to `locate.tokens.fact_subject_tokens` (ROME's key position, by tokenizer character offsets).
    """
    from locate.tokens import fact_subject_tokens

    return [fact_subject_tokens(handle, fact).last for fact in facts]
