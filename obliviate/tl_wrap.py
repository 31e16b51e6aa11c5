"""Wrap a local Hugging Face causal LM in TransformerLens, offline, and map weights back.

``HookedTransformer.from_pretrained`` wants an official hub name and the network. We build
the HookedTransformer from a local folder instead, with TransformerLens's own config and
weight converters, and keep the weights UNPROCESSED (no LayerNorm folding, no centring,
no value-bias folding): edit methods change TL weights and write them back under HF names
(see ``tl_to_hf_tensor``), which is only a rename + transpose on unprocessed weights.

Tested architectures: ``LlamaForCausalLM`` (SmolLM2), ``Gemma3ForCausalLM`` (Gemma-3-270M) and
``GPT2LMHeadModel`` (our small trained models); any other is refused by name (`SUPPORTED_ARCHITECTURES`).
Notes from making the local route work:

* TL decides the architecture from ``config.json`` when given a path, EXCEPT that it
  matches on substrings of the path first: a folder whose path contains "llama" or
  "gemma" is treated as a hub model of that family and the config is never read.
* TL's GPT-2 branch reads ``config.n_ctx``, which transformers 5 no longer has
  (``n_positions`` only), so TL's config detection FAILS on a plain local GPT-2 folder.
  Both are solved by handing TL a neutrally named temp folder holding only a config.json
  written from ``hf_model.config`` with ``n_ctx = n_positions`` added; weights are always
  taken from the in-memory ``hf_model``.
* TL knows Gemma 3's configuration only under its hub names (its config branch is chosen by name
  and never reads config.json). A Gemma 3 folder takes TL's Gemma-3-270M configuration (built
  offline from the name) as the template for everything the family shares (post-norms, QK norm,
  embedding scale, local/global attention) and its own config.json for every size, vocabulary,
  window, RoPE base and layer pattern (`_gemma3_config`), so any Gemma 3 text model wraps.
* TL's GPT-2 config sets ``d_mlp = 4 * n_embd`` and ignores ``n_inner``; we correct it.
* TL reloads the tokenizer from ``name_or_path`` with ``add_bos_token=True`` and then strips
  the BOS when ``default_prepend_bos`` is False. An in-memory tokenizer that cannot be
  reloaded is set directly instead.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Substrings TL's convert_hf_model_config matches on the *name* before reading config.json.
_TL_NAME_TRAPS = ("llama", "gemma")
SUPPORTED_ARCHITECTURES = ("GPT2LMHeadModel", "LlamaForCausalLM", "Gemma3ForCausalLM")
"""The HF architectures the wrapper builds and tests (TL and HF logits within 1e-4)."""
# TL builds Gemma 3 configurations by hub name only; this one is the template for the family (`_gemma3_config`).
_GEMMA3_TEMPLATE = "google/gemma-3-270m"
# Non-parameter state TL registers that no HF checkpoint provides.
_TL_BUFFER_SUFFIXES = ("IGNORE", "mask", "rotary_sin", "rotary_cos")


# ---------------------------------------------------------------------------------------
# Building the HookedTransformer
# ---------------------------------------------------------------------------------------


def hf_prepends_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the HF tokenizer puts a BOS token in front of plain text by default."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


@contextmanager
def _tl_config_dir(hf_model: PreTrainedModel) -> Iterator[str]:
    """A neutrally named temp folder holding ``hf_model``'s config.json, for TL to read.

    Why not the real folder: TL matches "llama"/"gemma" in the path before reading the
    config, and TL's GPT-2 branch reads ``n_ctx``, which transformers 5 configs no longer
    have (only ``n_positions``). The weights come from ``hf_model``, never from here.
    """
    with tempfile.TemporaryDirectory(prefix="obliviate-tl-") as tmp:
        folder = Path(tmp) / "local-model"
        if any(trap in str(folder).lower() for trap in _TL_NAME_TRAPS):
            raise RuntimeError(f"temp dir {tmp} contains a name TL misreads; set TMPDIR elsewhere")
        folder.mkdir()
        cfg = hf_model.config.to_dict()
        if cfg.get("model_type") == "gpt2" and "n_ctx" not in cfg:
            cfg["n_ctx"] = cfg["n_positions"]
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        yield str(folder)


def _set_tokenizer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase) -> None:
    # A copy: TL fills missing eos/pad/bos tokens in place, which must not leak to the caller.
    tok = copy.deepcopy(tokenizer)
    try:
        model.set_tokenizer(tok)
    except (OSError, ValueError, TypeError, KeyError) as err:
        # TL could not reload it with add_bos_token=True (e.g. never saved); use it as is.
        log.info("TL could not reload the tokenizer (%s); setting it directly", err)
        model.tokenizer = tok
        model.cfg.tokenizer_prepends_bos = len(tok.encode("")) > 0
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if tok.padding_side is None:
            tok.padding_side = "right"


def _gemma3_config(hf_cfg: dict, *, prepend_bos: bool, device: str):
    """TL's configuration of a Gemma 3 text model: the family's settings from TL's Gemma-3-270M template, every
    size and per-model setting from the model's own config."""
    from transformer_lens import HookedTransformerConfig, loading

    template = loading.get_pretrained_model_config(_GEMMA3_TEMPLATE, dtype=torch.float32,
                                                   default_prepend_bos=prepend_bos, device=device)
    rope = hf_cfg.get("rope_parameters") or {}
    cfg = template.to_dict()
    cfg.update(
        d_model=hf_cfg["hidden_size"], d_head=hf_cfg["head_dim"], n_heads=hf_cfg["num_attention_heads"],
        n_key_value_heads=hf_cfg["num_key_value_heads"], d_mlp=hf_cfg["intermediate_size"],
        n_layers=hf_cfg["num_hidden_layers"], d_vocab=hf_cfg["vocab_size"], d_vocab_out=hf_cfg["vocab_size"],
        eps=hf_cfg["rms_norm_eps"], act_fn=hf_cfg["hidden_activation"], window_size=hf_cfg["sliding_window"],
        attn_types=["global" if kind == "full_attention" else "local" for kind in hf_cfg["layer_types"]],
        rotary_dim=hf_cfg["head_dim"],
        rotary_base=rope.get("full_attention", {}).get("rope_theta", cfg["rotary_base"]),
        rotary_base_local=rope.get("sliding_attention", {}).get("rope_theta", cfg["rotary_base_local"]),
        n_params=None, model_name="local-gemma3",
    )
    config = HookedTransformerConfig.from_dict(cfg)
    config.attn_scale = float(hf_cfg.get("query_pre_attn_scalar", hf_cfg["head_dim"])) ** 0.5  # HF's q scaling
    return config


def _load_checked(model: HookedTransformer, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state_dict`` non-strictly; raise if a real weight is missing or unexpected.

    TL-only buffers (causal mask, IGNORE, rotary tables) are fine to miss. A missing BIAS
    (e.g. GPT-2's ``unembed.b_U``: HF has no unembedding bias) is set to exactly zero, which
    is what the HF model computes; anything else missing is an error. Returns the zeroed names.
    """
    params = dict(model.named_parameters())
    zeroed = [k for k in params if k not in state_dict and k.rsplit(".", 1)[-1].startswith("b_")]
    full = {**state_dict, **{k: torch.zeros_like(params[k]) for k in zeroed}}
    result = model.load_state_dict(full, strict=False)
    missing = [k for k in result.missing_keys if k in params or not k.endswith(_TL_BUFFER_SUFFIXES)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise RuntimeError(
            f"TransformerLens weight load mismatch: missing={missing[:20]} unexpected={unexpected[:20]}"
        )
    return zeroed


def hooked_from_hf(
    hf_dir: Path,
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    prepend_bos: bool,
    device: str = "cpu",
) -> HookedTransformer:
    """A HookedTransformer with the (unprocessed) weights of ``hf_model``, built offline.

    ``hf_dir`` is the local HF folder ``hf_model`` came from: it names the model and its
    config.json must agree with ``hf_model.config`` (TL itself reads a sanitised copy of the
    in-memory config, and takes the weights from ``hf_model``; see the module doc).
    ``prepend_bos`` becomes ``cfg.default_prepend_bos``; pass what the HF tokenizer does
    (``hf_prepends_bos(tokenizer)``) if TL and HF must see identical tokens — e.g. False
    for SmolLM2 and for GPT-2 tokenizers. Works for Llama- and GPT-2-architecture models.
    """
    from transformer_lens import HookedTransformer, loading

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} has no config.json; save the HF model there first")
    on_disk = json.loads((hf_dir / "config.json").read_text()).get("model_type")
    if on_disk != hf_model.config.model_type:
        raise ValueError(f"{hf_dir} holds a {on_disk!r} model but hf_model is {hf_model.config.model_type!r}")
    if prepend_bos != hf_prepends_bos(tokenizer):
        warnings.warn(
            f"prepend_bos={prepend_bos} but the HF tokenizer {'does' if not prepend_bos else 'does not'} "
            "prepend BOS: TL and HF will tokenise strings differently",
            stacklevel=2,
        )
    hf_cfg = hf_model.config.to_dict()
    architecture = (hf_cfg.get("architectures") or [type(hf_model).__name__])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise NotImplementedError(f"{hf_dir}: architecture {architecture!r} is not supported by the TransformerLens "
                                  f"wrapper; supported: {', '.join(SUPPORTED_ARCHITECTURES)}.")
    gemma3 = architecture == "Gemma3ForCausalLM"
    with _tl_config_dir(hf_model) as path:
        if gemma3:
            cfg = _gemma3_config(hf_cfg, prepend_bos=prepend_bos, device=device)
        else:
            # hf_cfg, not hf_model: extra kwargs here are forwarded to AutoConfig.from_pretrained.
            cfg = loading.get_pretrained_model_config(
                path, hf_cfg=hf_cfg, dtype=torch.float32, default_prepend_bos=prepend_bos, device=device
            )
        if cfg.original_architecture == "GPT2LMHeadModel" and hf_cfg.get("n_inner"):
            cfg.d_mlp = hf_cfg["n_inner"]  # TL assumes 4 * n_embd
        cfg.model_name = hf_dir.name
        cfg.tokenizer_name = None  # we pass the tokenizer; never look one up by name
        cfg.default_prepend_bos = prepend_bos
        state_dict = loading.get_pretrained_state_dict(_GEMMA3_TEMPLATE if gemma3 else path, cfg, hf_model,
                                                       dtype=torch.float32)
    with warnings.catch_warnings():
        # TL 3.x deprecates HookedTransformer for TransformerBridge; the workbench targets the
        # HookedTransformer API (hook names, weight layout) on purpose.
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    zeroed = _load_checked(model, state_dict)
    if zeroed:
        log.info("zero biases HF does not have: %s", zeroed)
    _set_tokenizer(model, tokenizer)
    model.cfg.default_prepend_bos = prepend_bos  # set_tokenizer must not have changed it
    if torch.device(device) != torch.device("cpu"):  # built on CPU; .to() is chatty, skip if no-op
        model.to(device)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------
# TL <-> HF parameter names
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRule:
    """One TL parameter family and its HF counterpart.

    ``transpose``: HF ``nn.Linear`` stores weights [out, in]; TL stores [in, out] (e.g.
    ``W_out`` is [d_mlp, d_model]), so the tensor is transposed across the boundary. GPT-2's
    ``Conv1D`` already stores [in, out], so there is no transpose for GPT-2.
    """

    tl: str  # template with {i}
    hf: str  # template with {i}
    transpose: bool


_RULES: dict[str, tuple[ParamRule, ...]] = {
    "gpt2": (
        ParamRule("blocks.{i}.mlp.W_out", "transformer.h.{i}.mlp.c_proj.weight", False),
        ParamRule("blocks.{i}.mlp.b_out", "transformer.h.{i}.mlp.c_proj.bias", False),
        ParamRule("blocks.{i}.mlp.W_in", "transformer.h.{i}.mlp.c_fc.weight", False),
        ParamRule("blocks.{i}.mlp.b_in", "transformer.h.{i}.mlp.c_fc.bias", False),
    ),
    "llama": (  # Gemma 3's gated MLP has the same names and layout
        ParamRule("blocks.{i}.mlp.W_out", "model.layers.{i}.mlp.down_proj.weight", True),
        ParamRule("blocks.{i}.mlp.W_in", "model.layers.{i}.mlp.up_proj.weight", True),
        ParamRule("blocks.{i}.mlp.W_gate", "model.layers.{i}.mlp.gate_proj.weight", True),
    ),
}
_ARCH_ALIASES = {
    "gpt2": "gpt2",
    "gpt2lmheadmodel": "gpt2",
    "llama": "llama",
    "llamaforcausallm": "llama",
    "gemma3_text": "llama",
    "gemma3forcausallm": "llama",
}


def architecture_family(arch: str | PreTrainedModel | HookedTransformer) -> str:
    """'gpt2' or 'llama' from an architecture/model_type string, an HF model, or a TL model."""
    if not isinstance(arch, str):
        cfg = arch.cfg if hasattr(arch, "cfg") else None
        if cfg is not None and getattr(cfg, "original_architecture", None):
            arch = cfg.original_architecture
        else:
            hf_cfg = arch.config
            arch = (hf_cfg.architectures or [hf_cfg.model_type])[0]
    family = _ARCH_ALIASES.get(arch.lower())
    if family is None:
        raise NotImplementedError(f"no TL<->HF parameter map for architecture {arch!r}")
    return family


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


def _lookup(name: str, arch: str, side: str) -> tuple[ParamRule, int]:
    for rule in _RULES[architecture_family(arch)]:
        match = _template_regex(getattr(rule, side)).match(name)
        if match:
            return rule, int(match.group(1))
    raise KeyError(f"no {side}-side mapping for {name!r} ({arch}); mapped: MLP weights/biases only")


def tl_to_hf_param_name(tl_name: str, arch: str) -> tuple[str, bool]:
    """(HF name, transpose?) for a TL parameter name, e.g. 'blocks.3.mlp.W_out'."""
    rule, i = _lookup(tl_name, arch, "tl")
    return rule.hf.format(i=i), rule.transpose


def hf_to_tl_param_name(hf_name: str, arch: str) -> tuple[str, bool]:
    """(TL name, transpose?) for an HF parameter name, e.g. 'model.layers.3.mlp.down_proj.weight'."""
    rule, i = _lookup(hf_name, arch, "hf")
    return rule.tl.format(i=i), rule.transpose


def tl_to_hf_tensor(
    tl_name: str, tensor: Float[torch.Tensor, "*shape"], arch: str
) -> tuple[str, Float[torch.Tensor, "*shape_hf"]]:
    """The HF name and HF-layout tensor for a TL parameter (a contiguous copy if transposed)."""
    hf_name, transpose = tl_to_hf_param_name(tl_name, arch)
    return hf_name, (tensor.T.contiguous() if transpose else tensor)


def hf_to_tl_tensor(
    hf_name: str, tensor: Float[torch.Tensor, "*shape"], arch: str
) -> tuple[str, Float[torch.Tensor, "*shape_tl"]]:
    """The TL name and TL-layout tensor for an HF parameter (a contiguous copy if transposed)."""
    tl_name, transpose = hf_to_tl_param_name(hf_name, arch)
    return tl_name, (tensor.T.contiguous() if transpose else tensor)


@torch.no_grad()
def write_tl_param_to_hf(
    hf_model: PreTrainedModel, tl_name: str, tensor: Float[torch.Tensor, "*shape"]
) -> str:
    """Copy a (changed) TL parameter into ``hf_model`` in place; returns the HF name written."""
    hf_name, hf_tensor = tl_to_hf_tensor(tl_name, tensor, architecture_family(hf_model))
    target = hf_model.get_parameter(hf_name)
    if target.shape != hf_tensor.shape:
        raise ValueError(f"{tl_name} -> {hf_name}: shape {tuple(hf_tensor.shape)} != {tuple(target.shape)}")
    target.copy_(hf_tensor.to(dtype=target.dtype, device=target.device))
    return hf_name
