"""An ensemble of language models as one scoreable model: the SISA aggregate (obliviate/world/sisa.py).

Prediction is the mean of the constituents' next-token distributions (Bourtoule et al. 2021, "Machine
Unlearning"; reference cleverhans-lab/machine-unlearning ``aggregation.py``), so its logits are
log(mean_i softmax(logits_i)). `load_ensemble` wraps a SISA folder in a `ModelHandle` whose `tl` and `hf` both
compute that: every measurement that only reads logits (recall, CounterFact scores, perplexity, the relearning and
keyword attacks) scores it as any model. It has no single residual stream, so attacks that hook internals (logit
lens, probes, patching) do not apply to it, and it refuses interventions.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int


def log_mean_probs(logits: Float[torch.Tensor, "model *batch vocab"]) -> Float[torch.Tensor, "*batch vocab"]:
    """log(mean over the first axis of softmax(logits)), computed stably in float32."""
    return torch.logsumexp(logits.float().log_softmax(-1), dim=0) - math.log(logits.shape[0])


@dataclass
class _Output:
    logits: torch.Tensor


class MeanProbabilityLM(torch.nn.Module):
    """Hugging Face-style: `model(input_ids=…, attention_mask=…).logits` = log of the averaged probabilities."""

    def __init__(self, constituents: list[Any]):
        super().__init__()
        self.constituents = torch.nn.ModuleList(constituents)

    def forward(self, input_ids: Int[torch.Tensor, "batch pos"], attention_mask: torch.Tensor | None = None,
                **_: Any) -> _Output:
        return _Output(log_mean_probs(torch.stack(
            [m(input_ids=input_ids, attention_mask=attention_mask).logits for m in self.constituents])))


class MeanProbabilityTL(torch.nn.Module):
    """TransformerLens-style: `model(tokens)` = log of the averaged probabilities; `cfg` is the first's."""

    def __init__(self, models: list[Any]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.cfg = copy.copy(models[0].cfg)

    def forward(self, tokens: Int[torch.Tensor, "batch pos"], **_: Any) -> Float[torch.Tensor, "batch pos vocab"]:
        return log_mean_probs(torch.stack([m(tokens) for m in self.models]))

    def to_tokens(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.models[0].to_tokens(*args, **kwargs)


PREPEND_BOS = False
"""The world models' convention (no BOS), which every SISA constituent follows."""


def ensemble_tokenizer(sisa_dir: str | Path) -> Any:
    """The tokenizer the constituents share, saved beside the shards (obliviate.world.sisa.train_sisa)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(sisa_dir) / "tokenizer")


def is_ensemble(handle: Any) -> bool:
    """Whether a handle is an aggregate (no single residual stream: internals-reading measures do not apply)."""
    return isinstance(getattr(handle, "tl", None), MeanProbabilityTL)


def is_sisa_folder(name: str | Path) -> bool:
    from obliviate.world.sisa import SISA_MANIFEST

    path = Path(str(name)).expanduser()
    return path.is_dir() and (path / SISA_MANIFEST).is_file()


def _handle_class() -> type:
    from obliviate.models import ModelHandle

    class EnsembleHandle(ModelHandle):
        """A ModelHandle over a SISA folder (`hf_dir`): `hf` and `tl` are the mean-probability aggregates."""

        @cached_property
        def weights_hash(self) -> str:
            from obliviate.models import weights_file_hash

            digest = hashlib.sha256()
            for folder in constituent_folders(self.hf_dir):
                digest.update(weights_file_hash(folder).encode())
            return digest.hexdigest()

        def rebuilt(self, changed: dict[str, torch.Tensor] | None, interventions: list[Any] | None, *,
                    name: str | None = None) -> Any:
            """`obliviate.models.edited_copy` for an ensemble: changed tensors named ``constituents.<i>.<name>``."""
            if interventions:
                raise NotImplementedError("an ensemble has no single residual stream to hook; interventions "
                                          "cannot be attached to a SISA aggregate.")
            hf = copy.deepcopy(self.hf)
            _write(hf, changed or {}, self.name)
            return _assemble(name or self.name, self.hf_dir, list(hf.constituents), self.tokenizer,
                             self.prepend_bos, str(self.tl.cfg.device), artefact=self.artefact)

    return EnsembleHandle


def constituent_folders(sisa_dir: Path) -> list[Path]:
    from obliviate.world.sisa import constituent_dirs

    return constituent_dirs(sisa_dir)


def _write(hf: MeanProbabilityLM, changed: dict[str, torch.Tensor], where: str) -> None:
    state = hf.state_dict()
    with torch.no_grad():
        for key, value in changed.items():
            if key not in state:
                raise KeyError(f"{where}: {key!r} is not a weight of the ensemble (constituents.<i>.<HF name>).")
            if state[key].shape != value.shape:
                raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, the ensemble's is "
                                 f"{tuple(state[key].shape)}.")
            state[key].copy_(value.to(state[key]))


def _assemble(name: str, sisa_dir: Path, constituents: list[Any], tokenizer: Any, prepend_bos: bool, device: str,
              artefact: Path | None = None) -> Any:
    from obliviate.tl_wrap import hooked_from_hf

    folders = constituent_folders(sisa_dir)
    tls = [hooked_from_hf(folder, hf, tokenizer, prepend_bos=prepend_bos, device=device).eval()
           for folder, hf in zip(folders, constituents)]
    return _handle_class()(name=name, hf_dir=Path(sisa_dir), hf=MeanProbabilityLM(constituents).eval(),
                           tokenizer=tokenizer, tl=MeanProbabilityTL(tls).eval(), prepend_bos=prepend_bos,
                           artefact=artefact)


def constituent_handle(handle: Any, index: int) -> Any:
    """Constituent `index` of an ensemble handle on its own (an aggregate of one model: exactly its predictions)."""
    member = handle.hf.constituents[index]
    return _assemble(f"{handle.name}#constituent{index}", Path(handle.hf_dir), [member], handle.tokenizer,
                     handle.prepend_bos, str(handle.tl.cfg.device))


def load_ensemble(sisa_dir: str | Path, *, artefact: str | Path | None = None, device: str = "cpu",
                  prepend_bos: bool | None = None) -> Any:
    """The SISA aggregate in `sisa_dir` as a handle (an edit artefact's tensors applied in memory, if given)."""
    from transformers import AutoModelForCausalLM

    sisa_dir = Path(sisa_dir)
    tokenizer = ensemble_tokenizer(sisa_dir)
    constituents = [AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
                    .to(device).eval() for folder in constituent_folders(sisa_dir)]
    bos = PREPEND_BOS if prepend_bos is None else prepend_bos
    handle = _assemble(str(sisa_dir), sisa_dir, constituents, tokenizer, bos, device)
    if artefact is None:
        return handle
    from obliviate.models import _apply_artefact

    interventions = _apply_artefact(handle.hf, Path(artefact), handle.weights_hash)
    return handle.rebuilt({}, interventions, name=str(sisa_dir)) if interventions else \
        _assemble(str(sisa_dir), sisa_dir, list(handle.hf.constituents), tokenizer, bos, device, Path(artefact))
