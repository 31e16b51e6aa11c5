"""Base-model lens: read the audited model's intermediate states with the BASE model's final norm and unembedding.

The logit-lens attack (audit/logit_lens_attack.py; Patil, Hase & Bansal 2023, reference Vaidehi99/InfoDeletionAttacks)
decodes each depth with the audited model's own head. An edit that changes the head itself — the final norm, the
unembedding rows of the answers — hides the answer from that lens at every depth while the residual stream still
carries it. The auditor holds the base model, whose head is trusted: this attack decodes the audited model's
residuals (depths 0 … L at the prompt's last token, every hook inside the blocks acting) with the base's final-norm
and unembedding weights (no head hook runs). The oracle is attacked the same way (its residuals, the base's head):
``world-retain`` is trained from the same initialisation and recipe as ``world``, so its residual basis is the one
the base head reads.

Scores, variants and details are the logit-lens attack's (its module docstring): the best p(answer) over the
attacked layers, or 1 when the answer lands in the lens's bottom-k at one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float

from audit.attack_result import AttackContext, AttackResult
from audit.logit_lens_attack import Decoder, LogitLensConfig, head_logits, run_logit_lens
from obliviate.facts import Fact
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class BaseLensConfig:
    """Which layers the base-head lens reads and how wide its top/bottom window is."""

    k: int = 5
    """Top-k / bottom-k window (as the logit-lens attack)."""
    layers: tuple[int, ...] | None = None
    """Blocks whose output residual is decoded (None: all)."""
    batch_size: int = 32
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this (b, u: top-1 of base and of the attacked handle, as 0/1)."""

    def lens(self) -> LogitLensConfig:
        return LogitLensConfig(k=self.k, layers=self.layers, batch_size=self.batch_size, min_gap=self.min_gap)


def check_same_width(base: Any, *handles: Any) -> None:
    """A ValueError naming both models when a handle's residual width is not the base's (its head cannot read it)."""
    width = int(base.tl.cfg.d_model)
    for handle in handles:
        if handle is not None and int(handle.tl.cfg.d_model) != width:
            raise ValueError(f"{handle.name} has d_model {int(handle.tl.cfg.d_model)}, the base {base.name} "
                             f"{width}: the base's head cannot read its residuals; audit a model of the base's "
                             f"architecture.")


def base_head(base: Any) -> Decoder:
    """The base model's final norm and unembedding, by their weights, as a lens for any model's residuals."""
    def decode(resid: Float[torch.Tensor, "depth batch d_model"]) -> Float[torch.Tensor, "depth batch vocab"]:
        return head_logits(base.tl, resid.to(base.tl.cfg.device))

    return decode


def run_base_lens(base: Any, edited: Any, facts: Sequence[Fact], oracle: Any | None = None,
                  config: BaseLensConfig = BaseLensConfig()) -> AttackResult:
    """The base-head lens on `edited` (and on `oracle`)."""
    check_same_width(base, edited, oracle)
    return run_logit_lens(base, edited, facts, oracle, config.lens(), decoder=base_head(base), attack="base_lens",
                          lens="the base model's head", settings=asdict(config))


@ATTACKS.register("base_lens", BaseLensConfig)
def base_lens_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: BaseLensConfig, ctx: AttackContext
                     ) -> AttackResult:
    """Base lens: decode intermediate states with the base model's final norm and unembedding, not the audited head."""
    return run_base_lens(base, edited, facts, ctx.oracle, cfg)
