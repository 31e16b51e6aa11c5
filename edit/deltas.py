"""Weight deltas of the locate-then-edit methods: applied in memory, restored bit-exactly, saved as full tensors.

ROME and MEMIT compute ΔW for a few ``W_out`` matrices. They never write the model they were given (the
references' global caches and in-place updates are the source of EasyEdit's "state leaks between sequential
edits"): an edit function returns a `WeightEditResult` holding the deltas, and the caller decides:

- ``with apply_deltas(handle, result.deltas): ...`` evaluates the edited model in memory and puts the original
  tensors back on exit (copied back, not subtracted, so the restore is bit-identical);
- ``result.changed`` (filled by the edit functions through `changed_tensors`) holds the full edited tensors under
  their HF names, the form ``obliviate.artefacts.save_artefact`` stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from edit.result import EditResult
from edit.sites import edit_site


@dataclass
class WeightEditResult(EditResult):
    """An `EditResult` of a weight edit, plus the deltas themselves (TL names, TL layout [d_mlp, d_model])."""

    goal: str = "rewrite"
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    """TL parameter name → ΔW (added to the weight; float32, same layout as the TL parameter)."""
    hf_names: dict[str, str] = field(default_factory=dict)
    """TL parameter name → Hugging Face parameter name of the same tensor."""
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)
    """Method-specific vectors (ROME: u, v, k_star, delta; MEMIT: z and the targets' keys per layer)."""
    losses: list[list[float]] = field(default_factory=list)
    """Per fact, the v*/z optimisation loss at each step."""


def _tl_param(handle: Any, name: str) -> torch.nn.Parameter:
    return handle.tl.get_parameter(name)


def _layer_of(name: str) -> int:
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "blocks" or not parts[1].isdigit():
        raise KeyError(f"{name!r} is not a per-block TL parameter (blocks.<L>.…).")
    return int(parts[1])


def _hf_param(handle: Any, name: str) -> tuple[torch.nn.Parameter, bool] | None:
    """The HF parameter behind TL `name` and whether it is stored transposed; None if it is the TL storage."""
    if getattr(handle, "hf", None) is None:
        return None
    site = edit_site(handle, _layer_of(name))
    if site.weight != name:
        raise KeyError(f"{name!r}: only MLP down-projections (blocks.<L>.mlp.W_out) are edited here.")
    param = handle.hf.get_parameter(site.hf_weight)
    if param.data_ptr() == _tl_param(handle, name).data_ptr():
        return None
    return param, site.hf_transpose


@contextmanager
def apply_deltas(handle: Any, deltas: Mapping[str, Float[torch.Tensor, "d_in d_out"]], *,
                 scale: float = 1.0, hf: bool = True) -> Iterator[Any]:
    """Add `scale`·ΔW to the handle's TL weights (and the HF copies) for the duration of the block.

    The original tensors are cloned first and copied back on exit, even after an exception, so the weights end
    bit-identical to where they started. Yields the handle.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, delta in deltas.items():
                param = _tl_param(handle, name)
                if param.shape != delta.shape:
                    raise ValueError(f"delta for {name} has shape {tuple(delta.shape)}, weight {tuple(param.shape)}.")
                saved.append((param, param.detach().clone()))
                param.add_(scale * delta.to(param))
                mirror = _hf_param(handle, name) if hf else None
                if mirror is not None:
                    hf_param, transpose = mirror
                    saved.append((hf_param, hf_param.detach().clone()))
                    hf_param.add_(scale * (delta.T if transpose else delta).to(hf_param))
        yield handle
    finally:
        with torch.no_grad():
            for param, original in reversed(saved):
                param.copy_(original)


def changed_tensors(handle: Any, deltas: Mapping[str, Float[torch.Tensor, "d_in d_out"]]) -> dict[str, torch.Tensor]:
    """HF name → the full edited tensor (base + ΔW, in HF layout): an artefact's ``changed`` dict."""
    out = {}
    for name, delta in deltas.items():
        site = edit_site(handle, _layer_of(name))
        base = handle.hf.get_parameter(site.hf_weight).detach()
        update = delta.T if site.hf_transpose else delta
        out[site.hf_weight] = (base + update.to(base)).contiguous().clone()
    return out


def hf_name_map(handle: Any, deltas: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """TL parameter name → HF parameter name for each delta."""
    return {name: edit_site(handle, _layer_of(name)).hf_weight for name in deltas}


def sequential_edits(handle: Any, batches: Iterable[Sequence[Any]],
                     edit_batch: Callable[[Sequence[Any]], WeightEditResult]
                     ) -> Iterator[tuple[dict[str, torch.Tensor], WeightEditResult]]:
    """Edits made one batch after another, as a user chains them: each batch is computed on the model with every
    earlier batch's deltas applied (in memory, restored before the next yield). Yields, after each batch, the
    summed deltas so far and the batch's own result; the model given is never written."""
    total: dict[str, torch.Tensor] = {}
    for batch in batches:
        with apply_deltas(handle, total):
            result = edit_batch(batch)
        total = {**total, **{name: total[name] + delta if name in total else delta.clone()
                             for name, delta in result.deltas.items()}}
        yield total, result


def batched(items: Sequence[Any], size: int | None) -> list[Sequence[Any]]:
    """`items` in consecutive chunks of `size` (None or ≥ len: one chunk)."""
    if size is not None and size < 1:
        raise ValueError(f"batch size {size}: use a positive number (or None for one batch).")
    step = size or max(len(items), 1)
    return [items[i:i + step] for i in range(0, len(items), step)]
