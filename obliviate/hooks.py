"""Savable activation interventions, applied as scoped TransformerLens hooks.

Every inference-time edit the workbench makes reduces to one of three maps on a hook point's activation x:

- ``AffineErasure``:  x ← x − (x − μ) Mᵀ. PGA's projector in standardised space
  (M = diag(σ) U Uᵀ diag(1/σ)) and LEACE's oblique projection (M = W⁺ P W) are both of this form.
- ``AddVector``:      x ← x + α v (activation steering; difference-of-means or SAE decoder directions).
- ``LogitPenalty``:   logits[..., ids] −= penalty (an output-only suppression, the audit's calibration case).

Each is a frozen dataclass with tensors, saved as safetensors plus a JSON spec, and used as a context manager
(`with intervention.applied(model): ...`) so it is scoped and cannot leak into later calls — the lesson of
steering-vectors and of EasyEdit's leaking sequential edits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from obliviate.results import atomic_save_tensors, atomic_write_json, load_tensors


@dataclass(frozen=True)
class AffineErasure:
    """x ← x − (x − mean) @ matrix.T at one hook point (all positions, or the last one only)."""

    hook_name: str
    matrix: Float[torch.Tensor, "d d"]
    mean: Float[torch.Tensor, " d"]
    last_position_only: bool = False
    kind: ClassVar[str] = "affine_erasure"

    def __call__(self, x: Float[torch.Tensor, "... d"], hook: Any = None) -> Float[torch.Tensor, "... d"]:
        matrix, mean = self.matrix.to(x), self.mean.to(x)
        if self.last_position_only:
            x = x.clone()
            x[:, -1] = x[:, -1] - (x[:, -1] - mean) @ matrix.T
            return x
        return x - (x - mean) @ matrix.T

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"matrix": self.matrix, "mean": self.mean}

    def spec(self) -> dict[str, Any]:
        return {"hook_name": self.hook_name, "last_position_only": self.last_position_only}


@dataclass(frozen=True)
class AddVector:
    """x ← x + scale · vector at one hook point (all positions, or the last one only)."""

    hook_name: str
    vector: Float[torch.Tensor, " d"]
    scale: float = 1.0
    last_position_only: bool = False
    kind: ClassVar[str] = "add_vector"

    def __call__(self, x: Float[torch.Tensor, "... d"], hook: Any = None) -> Float[torch.Tensor, "... d"]:
        delta = self.scale * self.vector.to(x)
        if self.last_position_only:
            x = x.clone()
            x[:, -1] = x[:, -1] + delta
            return x
        return x + delta

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"vector": self.vector}

    def spec(self) -> dict[str, Any]:
        return {"hook_name": self.hook_name, "scale": self.scale, "last_position_only": self.last_position_only}


@dataclass(frozen=True)
class LogitPenalty:
    """logits[..., token_ids] −= penalty: hides answers at the output and changes nothing inside."""

    token_ids: tuple[int, ...]
    penalty: float = 20.0
    hook_name: str = "unembed.hook_out"
    kind: ClassVar[str] = "logit_penalty"

    def __call__(self, logits: Float[torch.Tensor, "... vocab"], hook: Any = None) -> Float[torch.Tensor, "... vocab"]:
        logits = logits.clone()
        logits[..., list(self.token_ids)] -= self.penalty
        return logits

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"token_ids": torch.tensor(self.token_ids, dtype=torch.long)}

    def spec(self) -> dict[str, Any]:
        return {"hook_name": self.hook_name, "penalty": self.penalty}


Intervention = AffineErasure | AddVector | LogitPenalty
_KINDS: dict[str, type] = {cls.kind: cls for cls in (AffineErasure, AddVector, LogitPenalty)}


@contextmanager
def applied(model: HookedTransformer, interventions: Sequence[Intervention]) -> Iterator[HookedTransformer]:
    """Apply interventions for the duration of the block; they are removed even if the block raises."""
    with model.hooks(fwd_hooks=[(i.hook_name, i) for i in interventions]):
        yield model


def attach_permanently(model: HookedTransformer, interventions: Sequence[Intervention]) -> None:
    """Attach interventions as TransformerLens permanent hooks (a loaded edited model keeps them).

    `model.reset_hooks(including_permanent=True)` removes them again.
    """
    for intervention in interventions:
        model.add_perma_hook(intervention.hook_name, intervention)


def save_interventions(folder: Path, interventions: Sequence[Intervention]) -> list[str]:
    """Write each intervention as <i>.<kind>.safetensors + a hooks.json index; returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    index, names = [], []
    for position, intervention in enumerate(interventions):
        file_name = f"hook{position}.{intervention.kind}.safetensors"
        atomic_save_tensors(folder / file_name, intervention.tensors())
        index.append({"kind": intervention.kind, "file": file_name, **intervention.spec()})
        names.append(file_name)
    atomic_write_json(folder / "hooks.json", index)
    return [*names, "hooks.json"]


def load_interventions(folder: Path) -> list[Intervention]:
    """Read what `save_interventions` wrote (safetensors only, no pickles)."""
    index_path = folder / "hooks.json"
    if not index_path.is_file():
        return []
    loaded: list[Intervention] = []
    for entry in json.loads(index_path.read_text()):
        entry = dict(entry)
        kind = entry.pop("kind")
        if kind not in _KINDS:
            raise ValueError(f"{index_path}: unknown intervention kind {kind!r}; known: {', '.join(_KINDS)}.")
        tensors = load_tensors(folder / entry.pop("file"))
        if kind == "logit_penalty":
            tensors["token_ids"] = tuple(int(t) for t in tensors["token_ids"].tolist())
        loaded.append(_KINDS[kind](**entry, **tensors))
    return loaded
