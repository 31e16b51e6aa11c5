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

Gemma 2/3 (``Gemma3ForCausalLM``) normalise the MLP's output once more before the residual adds it (the
post-feedforward RMSNorm, TL ``blocks.L.ln2_post``), so ``hook_mlp_out`` = RMSNorm(hook_post @ W_out) and the
down-projection's own output is not the vector the residual receives. `EditSite.out_norm` names that norm; ROME's
value is then optimised in the projection's own output space and passed through the norm in the forward
(`post_norm_shift`), and MEMIT maps a wanted change of the residual back through the norm's Jacobian
(`weight_output_change`). The norm is scale-invariant, so the change along the current output is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

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
    out_norm: str | None = None
    """TL module that normalises the MLP output before the residual adds it (Gemma's ``blocks.L.ln2_post``)."""


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
    post_norm = bool(getattr(tl.cfg, "use_normalization_before_and_after", False))
    return EditSite(layer=layer, weight=weight, key_hook=f"blocks.{layer}.mlp.hook_post",
                    out_hook=f"blocks.{layer}.hook_mlp_out", resid_hook=f"blocks.{layer}.hook_resid_post",
                    hf_weight=hf_weight, hf_transpose=transpose,
                    out_norm=f"blocks.{layer}.ln2_post" if post_norm else None)


def projection_output(tl: Any, site: EditSite,
                      keys: Float[torch.Tensor, "n d_mlp"]) -> Float[torch.Tensor, "n d_model"]:
    """The down-projection's own output for `keys` (before any post-MLP norm): keys @ W_out + b_out (no grad)."""
    mlp = tl.blocks[site.layer].mlp
    with torch.no_grad():
        return keys.to(mlp.W_out.device, mlp.W_out.dtype) @ mlp.W_out + mlp.b_out


def post_norm(tl: Any, site: EditSite, x: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_model"]:
    """The site's post-MLP RMSNorm applied to `x` (the same arithmetic as TL's RMSNorm; differentiable in `x`
    only)."""
    norm = tl.get_submodule(site.out_norm)
    scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    return x / scale * norm.w.detach().to(x.device)


def post_norm_shift(tl: Any, site: EditSite, delta: Float[torch.Tensor, "n d_model"],
                    own_output: Float[torch.Tensor, "n d_model"],
                    normed_output: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_model"]:
    """What the residual receives extra when the projection's output `own_output` moves by `delta`: the identity
    without a post-MLP norm, else norm(own + δ) − norm(own) (`normed_output` is norm(own), as the model ran it)."""
    if site.out_norm is None:
        return delta
    return post_norm(tl, site, own_output + delta) - normed_output


def weight_output_change(tl: Any, site: EditSite, wanted: Float[torch.Tensor, "n d_model"],
                         own_output: Float[torch.Tensor, "n d_model"] | None) -> Float[torch.Tensor, "n d_model"]:
    """The change of the projection's own output that moves what the residual receives by `wanted`, to first
    order. Without a post-MLP norm that is `wanted` itself. With y = w ⊙ x / rms(x), dy = (w / rms) ⊙ P dx where
    P removes the component along x (the norm is scale-invariant), so dx = rms · P (wanted / w); a wanted
    component that P removes cannot be made by any dx."""
    if site.out_norm is None:
        return wanted
    if own_output is None:
        raise ValueError(f"{site.weight}: the MLP output is normalised ({site.out_norm}); pass its own output.")
    norm = tl.get_submodule(site.out_norm)
    x = own_output.float().to(wanted.device)
    rms = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    dx = rms * wanted.float() / norm.w.detach().float().to(wanted.device)
    unit = x / x.norm(dim=-1, keepdim=True)
    return dx - (dx * unit).sum(-1, keepdim=True) * unit
