"""SalUn: random-answer fine-tuning of only the weights most salient to the forget loss.

Fan, Liu, Zhang, Wei, Wong & Liu, ICLR 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency"; reference OPTML-Group/Unlearn-Saliency ``Classification/generate_mask.py`` (the mask) and
``Classification/unlearn/RL.py`` (random labelling):
1. saliency: g = Σ over forget batches of ∇θ(−loss(forget)) at the model before unlearning; the mask keeps the
   top `mask_share` of all weights by |g|, ranked globally across tensors (the reference's hard mask,
   ``int(N · share)`` weights; its default share 0.5);
2. fine-tune only the masked weights on the forget prompts relabelled at random plus the normal loss on the retain
   facts (the reference masks the gradients and puts the unmasked weights back after each step; here the GradDiff
   loop of `edit.baselines.finetune_unlearn` with its `grad_mask`).
The random label of a fact here is a random answer of its relation: drawn anew at every step, uniformly from the
true answers of the same `relation_id` in the request's facts (targets and retain), its own answer excluded (the
reference draws any class, the true one included; an answer it already gives teaches nothing). A relation with no
other answer falls back to the fact's counterfactual `target_new`.

Knob: `mask_share`, at fixed steps and lr. Measured on the world model (forget split, 120 facts; retain term on
the other 1,080 facts; recall on the forget facts and 300 retain facts, 0.96 / 0.96 before; batch 32):
- lr 1e-3, 64 steps: share 0.05 → forget 0.38, retain 0.87; 0.2 → 0.25 / 0.92; 0.5 → 0.16 / 0.94;
  1.0 → 0.12 / 0.95 — monotone in the share, and retain recall holds;
- lr 1e-3, share 0.5, by steps: 2 → 0.65 / 0.89; 4 → 0.28 / 0.55; 8 → 0.15 / 0.34; 16 → 0.23 / 0.63;
  32 → 0.33 / 0.87; 64 → 0.16 / 0.94 — not monotone (the random answers first break everything, then the retain
  term repairs what is not masked away), which the bisection of the operating-point search cannot follow;
- lr 1e-4 or 3e-4: monotone in steps but slower, and 128 steps at 1e-4 still leave 0.36 / 0.80.
So the search turns the share (how many of the most salient weights may move) and every point costs the same
training. Its strongest end, 1.0, is random-answer fine-tuning of every weight (the reference's RL without a mask).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool

from edit.baselines import GradDiffConfig, Relabel, _trainable, batch_gradients, descent_forget_loss, \
    finetune_unlearn
from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec

Mask = dict[str, Bool[torch.Tensor, "..."]]
"""HF parameter name → which coordinates may train."""


@dataclass
class SalUnConfig(GradDiffConfig):
    """SalUn: the saliency mask, then random-answer fine-tuning of the masked weights with a retain term."""

    mask_share: float = 0.5
    """Share of all (trainable-kind) weights in the mask, the largest |∂ forget loss / ∂θ| (reference: 0.5)."""
    steps: int = 64
    """Optimiser steps of the random-answer fine-tuning."""
    lr: float = 1e-3
    """AdamW learning rate."""
    stop_when_forgotten: bool = False
    """Stop once no forget prompt ranks its true answer first (off: the retain term keeps repairing after that)."""

    def validate(self) -> None:
        from obliviate.config.loader import InvalidField

        super().validate()
        if not (isinstance(self.mask_share, (int, float)) and 0.0 < self.mask_share <= 1.0):
            raise InvalidField("mask_share", f"{self.mask_share!r} is out of range; use a share in (0, 1] "
                                             f"(1: every weight may train, plain random-answer fine-tuning).")


def saliency_mask(handle: Any, model: torch.nn.Module, names: Sequence[str], targets: Sequence[Fact],
                  share: float, batch_size: int, paraphrases: bool = False) -> tuple[Mask, dict[str, torch.Tensor]]:
    """(mask, |g|): the top `share` of the weights `names` by |g|, g = Σ_batches ∇(−NLL(forget answers))."""
    params = dict(model.named_parameters())
    g = {name: torch.zeros_like(params[name], dtype=torch.float32) for name in names}
    for grads in batch_gradients(handle, model, names, targets, batch_size, paraphrases):
        for name, grad in zip(names, grads):
            if grad is not None:
                g[name] -= grad.float()  # the gradient of −loss, as the reference's mask
    saliency = {name: value.abs() for name, value in g.items()}
    flat = torch.cat([saliency[name].flatten() for name in names])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[flat.topk(max(1, int(flat.numel() * share))).indices.cpu()] = True
    mask, start = {}, 0
    for name in names:
        n = saliency[name].numel()
        mask[name] = keep[start:start + n].reshape(saliency[name].shape)
        start += n
    return mask, saliency


def random_answers(pool: Sequence[Fact], generator: torch.Generator) -> Relabel:
    """Relabel facts with a random other answer of their relation among `pool`'s true answers (else target_new)."""
    by_relation: dict[str, list[str]] = {}
    for fact in pool:
        answers = by_relation.setdefault(fact.relation_id, [])
        if fact.target_true not in answers:
            answers.append(fact.target_true)

    def relabel(facts: Sequence[Fact]) -> list[str]:
        out = []
        for fact in facts:
            options = [a for a in by_relation.get(fact.relation_id, []) if a != fact.target_true] or [fact.target_new]
            out.append(options[int(torch.randint(len(options), (), generator=generator))])
        return out

    return relabel


def salun_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: SalUnConfig | None = None, *,
               layers: Sequence[int] | None = None) -> EditResult:
    """SalUn on a copy of `handle.hf`; returns the changed tensors (only masked coordinates differ)."""
    cfg = cfg or SalUnConfig()
    if not targets:
        raise ValueError("salun needs at least one forget fact.")
    start = time.perf_counter()
    probe = copy.deepcopy(handle.hf).eval()  # gradients need a model of our own
    for p in probe.parameters():
        p.requires_grad_(True)
    names = [name for name, _ in _trainable(probe, cfg.params, layers)]
    mask, _ = saliency_mask(handle, probe, names, targets, cfg.mask_share, cfg.batch_size, cfg.use_paraphrases)
    del probe
    mask_s = time.perf_counter() - start
    relabel = random_answers([*targets, *retain], torch.Generator().manual_seed(cfg.seed))
    result = finetune_unlearn(handle, targets, retain, cfg, descent_forget_loss, method="salun", layers=layers,
                              answers=relabel, grad_mask=mask)
    n_masked = sum(int(m.sum()) for m in mask.values())
    result.timings = {"mask": mask_s, **result.timings, "total": time.perf_counter() - start}
    result.metrics.update(n_masked=n_masked, masked_share=n_masked / sum(m.numel() for m in mask.values()))
    return result


SALUN_KNOB = Knob("mask_share", 0.02, 1.0,
                  doc="share of the weights, most salient first, that may train (steps and lr fixed; 1: every weight)")


@EDITS.register("salun", SalUnConfig, spec=Spec(layers="any", knob=SALUN_KNOB))
def salun_method(handle: Any, request: EditRequest, cfg: SalUnConfig) -> EditResult:
    """SalUn: random same-relation answers on the targets, trained only in the weights salient to forgetting them."""
    return salun_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
