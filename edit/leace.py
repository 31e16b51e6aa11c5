"""LEACE: least-squares concept erasure (Belrose et al. 2023), through EleutherAI's concept-erasure library.

`LeaceFitter` streams the statistics of activations x and a concept z; its `LeaceEraser` maps
x ↦ x − ((x − b) @ proj_rightᵀ) @ proj_leftᵀ, i.e. the affine map x ← x − (x − μ) Mᵀ with
M = proj_left @ proj_right (= W⁺ P W for LEACE: the whitened oblique projection) and μ = the eraser's bias
(the mean of x). That is exactly an `obliviate.hooks.AffineErasure`, so the eraser becomes a
savable hook; `leace_erasure` builds it and checks it against the library's own eraser.

Guarantee (the library's and the paper's): on the data it was fitted on, after erasure no linear classifier
predicts z better than a constant, and the class-conditional means of x are equal.

Concepts:
- ``memorisation``: the world's secrets, memorised text (M) vs its paraphrase control (C), read at the last token
  after each neutral context at every depth (the activations the PGA paper's probe reads; `locate.memorisation_probe`).
- ``answer``: which answer a forget fact has (one class per distinct first answer token of the forget facts), read
  at the last prompt token of the forget prompts (and paraphrases): erases the linear read-out of the answer.
- ``membership``: forget prompt vs retain prompt, at the last prompt token.

Erasers are fitted depth by depth, each on the activations as they arrive with the shallower erasers already
applied (`sequential=True`), so the guarantee holds for the activations the edited model really produces. The hooks
act at every position (right-padded batches make "the last position" padding for most rows), with statistics
fitted at the last token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.hooks import AffineErasure, applied
from obliviate.registry import EDITS, Spec


def leace_erasure(x: Float[torch.Tensor, "n d"], z: Float[torch.Tensor, "n k"] | torch.Tensor, hook_name: str, *,
                  method: Literal["leace", "orth"] = "leace", check: bool = True, **fitter_kwargs: Any
                  ) -> AffineErasure:
    """Fit LEACE on (x, z) and return it as an AffineErasure at `hook_name`.

    `z` is a class index per row (integer vector, one-hot encoded here) or a float matrix (n, k).
    With `check`, the hook's output is compared with the library eraser's on x (float64, atol 1e-6 relative).
    """
    from concept_erasure import LeaceFitter

    x64 = x.detach().double().cpu()
    if z.dtype in (torch.int64, torch.int32, torch.bool) and z.ndim == 1:
        classes = torch.unique(z)
        z_mat = (z[:, None] == classes[None, :]).double()
        if len(classes) == 2:
            z_mat = z_mat[:, 1:]  # one column suffices for two classes; the second is its complement
    else:
        z_mat = z.detach().double().cpu().reshape(len(x64), -1)
    fitter = LeaceFitter(x64.shape[1], z_mat.shape[1], method=method, dtype=torch.float64, **fitter_kwargs)
    fitter.update(x64, z_mat)
    eraser = fitter.eraser
    matrix = eraser.proj_left @ eraser.proj_right
    mean = eraser.bias if eraser.bias is not None else torch.zeros(x64.shape[1], dtype=torch.float64)
    erasure = AffineErasure(hook_name, matrix.float(), mean.float())
    if check:
        ours = x64 - (x64 - mean) @ matrix.T
        theirs = eraser(x64)
        scale = x64.abs().max().clamp(min=1.0)
        if not torch.allclose(ours, theirs, atol=1e-6 * float(scale)):
            raise AssertionError("AffineErasure disagrees with concept_erasure's LeaceEraser; fields changed?")
    return erasure


@dataclass
class LeaceConfig:
    """Which concept LEACE erases, and where."""

    concept: Literal["memorisation", "answer", "membership"] = "answer"
    """memorisation: secrets' M vs C (targets are secrets); answer / membership: facts (see the module docstring)."""
    depths: list[int] | None = None
    """Residual depths to erase at (0 = embedding, d = block d−1's output); None = every depth for memorisation,
    [n_layers // 2] for fact concepts (EditConfig.layers overrides: layer L ↦ depth L + 1)."""
    sequential: bool = True
    """Fit each depth on activations with the shallower erasers applied (else all on the clean model)."""
    method: Literal["leace", "orth"] = "leace"
    """leace: the whitened oblique projection; orth: the plain orthogonal projection (library option)."""
    use_paraphrases: bool = True
    """Fact concepts: fit on the forget facts' paraphrase prompts as well."""
    max_tokens: int = 96
    """Memorisation concept: truncation of context + text (the probe's)."""


def _fact_rows(facts: Sequence[Fact], paraphrases: bool) -> list[tuple[str, Fact]]:
    rows = []
    for fact in facts:
        texts = [fact.text, *fact.paraphrase_prompts] if paraphrases else [fact.text]
        rows += [(t, fact) for t in texts]
    return rows


def _concept_data(handle: Any, targets: Sequence[Any], retain: Sequence[Fact], cfg: LeaceConfig
                  ) -> tuple[list[str], torch.Tensor]:
    """Texts whose last-token residual is read, and the concept label per text."""
    if cfg.concept == "memorisation":
        from locate.memorisation_probe import NEUTRAL_CONTEXTS, Secret

        secrets = [Secret.from_record(s) for s in targets]
        texts = [ctx + s.memorised for s in secrets for ctx in NEUTRAL_CONTEXTS]
        texts += [ctx + s.control for s in secrets for ctx in NEUTRAL_CONTEXTS]
        labels = torch.tensor([1] * (len(texts) // 2) + [0] * (len(texts) // 2))
        return texts, labels
    forget_rows = _fact_rows(targets, cfg.use_paraphrases)
    if cfg.concept == "membership":
        retain_rows = _fact_rows(retain, cfg.use_paraphrases)
        return [t for t, _ in forget_rows + retain_rows], torch.tensor([1] * len(forget_rows) + [0] * len(retain_rows))
    answers = sorted({handle.answer_token(f.target_true) for _, f in forget_rows})
    index = {a: i for i, a in enumerate(answers)}
    return [t for t, _ in forget_rows], torch.tensor([index[handle.answer_token(f.target_true)]
                                                      for _, f in forget_rows])


def leace_edit(handle: Any, targets: Sequence[Any], retain: Sequence[Fact] = (), cfg: LeaceConfig | None = None,
               *, layers: Sequence[int] | None = None) -> EditResult:
    """Fit LEACE erasers at the chosen depths (see LeaceConfig) and return them as AffineErasure hooks."""
    from locate.activations import collect_residuals, depth_hook_name, n_depths

    cfg = cfg or LeaceConfig()
    start = time.perf_counter()
    if layers:
        depths = [int(layer) + 1 for layer in layers]
    elif cfg.depths is not None:
        depths = list(cfg.depths)
    elif cfg.concept == "memorisation":
        depths = list(range(n_depths(handle)))
    else:
        depths = [handle.n_layers // 2]
    texts, labels = _concept_data(handle, targets, retain, cfg)
    if len(torch.unique(labels)) < 2:
        raise ValueError(f"LEACE concept {cfg.concept!r} has one class only on these targets; nothing to erase.")
    max_tokens = cfg.max_tokens if cfg.concept == "memorisation" else None
    hooks: list[AffineErasure] = []
    ranks: list[int] = []
    if not cfg.sequential:
        acts = collect_residuals(handle, texts, layers=depths, max_tokens=max_tokens)
    for i, depth in enumerate(depths):
        if cfg.sequential:
            with applied(handle.tl, hooks):
                x = collect_residuals(handle, texts, layers=[depth], max_tokens=max_tokens)[0]
        else:
            x = acts[i]
        erasure = leace_erasure(x, labels, depth_hook_name(depth), method=cfg.method)
        hooks.append(erasure)
        ranks.append(int(torch.linalg.matrix_rank(erasure.matrix.double(), atol=1e-6)))
    if cfg.concept == "memorisation":
        from locate.memorisation_probe import Secret

        target_ids = [Secret.from_record(t).key_id for t in targets]
    else:
        target_ids = [f.case_id for f in targets]
    return EditResult(method="leace", interventions=list(hooks), targets=target_ids,
                      layers=[d - 1 for d in depths], timings={"fit": time.perf_counter() - start},
                      metrics={"depths": depths, "erasure_rank": ranks, "n_texts": len(texts),
                               "n_classes": int(len(torch.unique(labels)))},
                      config=asdict(cfg))


@EDITS.register("leace", LeaceConfig, spec=Spec(layers="any"))
def leace_method(handle: Any, request: EditRequest, cfg: LeaceConfig) -> EditResult:
    """LEACE erasers of the configured concept; the memorisation concept reads the targets' secrets."""
    targets = request.memorised() if cfg.concept == "memorisation" else request.targets
    return leace_edit(handle, targets, request.retain, cfg, layers=request.layers)
