"""Config of the audit stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.config.loader import InvalidField, check_range

AUDIT_ATTACKS = ("keyword", "quantization", "probe", "logit_lens", "relearn", "sae_restore", "uds")


@dataclass
class AuditConfig:
    attacks: list[str] = field(default_factory=lambda: ["keyword", "quantization", "probe", "logit_lens", "relearn"])
    """Recovery attacks: keyword, quantization, probe, logit_lens, relearn, sae_restore, uds."""
    reference: str | None = "world-retain"
    """The never-learned oracle the attacks are calibrated against (None when none exists)."""
    margin: float = 0.10
    """A target is 'suppressed' when an attack recovers it this much beyond the oracle under the same attack."""
    relearn_steps: int = 10
    """Fine-tuning steps of the relearning attack (on other facts, never the targets)."""
    max_retain: int | None = None
    """Retain facts scored by the collateral and representation measurements: a seeded sample of this many (None =
    all). Both score every retain fact otherwise, the largest cost of a run with few targets."""
    max_heldout_texts: int = 400
    """Held-out texts for the perplexity change (the first ones of the file)."""
    show_progress: bool = True
    """Show progress bars on long loops."""

    def validate(self) -> None:
        for name in self.attacks:
            if name not in AUDIT_ATTACKS:
                raise InvalidField("attacks", f"unknown attack {name!r}; "
                                  f"choose from {', '.join(AUDIT_ATTACKS)}.")
        # a margin is a difference of recovery rates in [0, 1]; 1 or more could never call a target suppressed
        check_range("margin", self.margin, minimum=0, below=1)
        check_range("relearn_steps", self.relearn_steps, minimum=1)
        check_range("max_retain", self.max_retain, minimum=1, fix="null scores every retain fact")
        check_range("max_heldout_texts", self.max_heldout_texts, minimum=1)
