"""Where ROME and MEMIT write: the MLP down-projection of a block, in TransformerLens and Hugging Face terms.

The rank-one / least-squares edits of ROME (Meng et al. 2022) and MEMIT (Meng et al. 2023) treat the MLP's output
projection as a linear associative memory: key k = the projection's input at the subject's last token, value =
its output. In TransformerLens both supported families expose the same site:

- GPT-2 (``GPT2LMHeadModel``, the world models): ``blocks.L.mlp.hook_post`` = GELU(x W_in + b_in), the input of
  ``W_out`` [d_mlp, d_model]; HF ``transformer.h.L.mlp.c_proj.weight`` is a Conv1D stored [in, out], the same
  orientation as ``W_out``.
- Llama (SmolLM2): TL's GatedMLP sets ``hook_post`` = act(x W_gate) · (x W_in), again exactly the input of
  ``W_out``; HF ``model.layers.L.mlp.down_proj.weight`` is an ``nn.Linear`` stored [out, in] = ``W_out.T``.

``tests/test_rome.py`` checks ``hook_post @ W_out + b_out == hook_mlp_out`` on both families. Both families are
sequential (no parallel attention), so adding δ to the MLP output at a position equals adding δ to
``hook_resid_post`` there; the v*/z optimisation uses that to run only the blocks above the edit.
The TL↔HF name and transpose map is ``obliviate.tl_wrap``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from obliviate.tl_wrap import architecture_family, tl_to_hf_param_name


@dataclass(frozen=True)
class EditSite:
    """The down-projection of one block, with every name an edit needs."""

    layer: int
    weight: str
    """TL parameter name, e.g. ``blocks.5.mlp.W_out`` ([d_mlp, d_model])."""
    key_hook: str
    """TL hook whose activation is the projection's input (the key)."""
    out_hook: str
    """TL hook of the MLP's output (the value, bias included)."""
    resid_hook: str
    """TL hook of the residual stream after this block (where MEMIT's z lives)."""
    hf_weight: str
    """The same tensor's Hugging Face parameter name."""
    hf_transpose: bool
    """True when the HF tensor is stored [out, in] (nn.Linear), i.e. HF = W_out.T."""


def hf_blocks(hf: Any) -> Any:
    """The ModuleList of decoder blocks of an HF causal LM (GPT-2 ``transformer.h``, Llama ``model.layers``)."""
    base = hf.base_model
    for name in ("layers", "h"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise NotImplementedError(f"{type(hf).__name__}: no decoder block list found (looked for .layers and .h).")


def edit_site(model: Any, layer: int) -> EditSite:
    """The edit site of block `layer` of a HookedTransformer (or a ModelHandle)."""
    tl = getattr(model, "tl", model)
    n_layers = int(tl.cfg.n_layers)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is outside the model's blocks 0..{n_layers - 1}.")
    weight = f"blocks.{layer}.mlp.W_out"
    hf_weight, transpose = tl_to_hf_param_name(weight, architecture_family(tl))
    return EditSite(layer=layer, weight=weight, key_hook=f"blocks.{layer}.mlp.hook_post",
                    out_hook=f"blocks.{layer}.hook_mlp_out", resid_hook=f"blocks.{layer}.hook_resid_post",
                    hf_weight=hf_weight, hf_transpose=transpose)
