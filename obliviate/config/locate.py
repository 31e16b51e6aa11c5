"""Config of the locate stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from obliviate.config.loader import InvalidField, check_range

LOCATE_METHODS = ("trace", "atp", "logit_lens", "probe", "memorisation_probe", "sae", "subject_ablation")


@dataclass
class LocateConfig:
    methods: list[str] = field(default_factory=lambda: ["trace", "atp", "logit_lens", "probe"])
    """Which locate methods to run: trace, atp, logit_lens, probe, memorisation_probe, sae, subject_ablation."""
    max_targets: int | None = 8
    """Trace at most this many targets (tracing costs one batched forward per sample); None = all."""
    trace_kinds: list[str] = field(default_factory=lambda: ["resid", "mlp", "attn"])
    """Which sites to restore: the residual stream (hidden state), MLP outputs, attention outputs."""
    corruption: Literal["noise", "replace"] = "noise"
    """How the subject is corrupted: noise (ROME's Gaussian noise on its embeddings) or replace (symmetric token
    replacement by other subjects of the fact set: on-distribution, better for small models)."""
    noise_multiplier: float = 3.0
    """Noise std = this × the std of the subject-token embeddings over the fact set (ROME's s3)."""
    n_noise_samples: int = 10
    """Corrupted copies per fact (seeded noise samples, or replacement subjects); scores are averaged over them."""
    window: int = 10
    """MLP / attention restoration window, in layers, centred on each layer ([L - w/2, L + w/2))."""
    backend: Literal["transformer_lens", "nnsight"] = "transformer_lens"
    """Which model wrapper runs the patching; nnsight is the path for models too large for one machine."""
    sae_hook: str | None = None
    """Hook name the SAE reads (e.g. blocks.2.hook_resid_post); None = the proposed edit layer's residual."""
    unknown_names: list[str] | None = None
    """subject_ablation's never-seen subjects, of the targets' subjects' form; None: the world's unused names (the
    embedded world only; another fact set must give them)."""
    show_progress: bool = True
    """Show progress bars on long loops."""

    def validate(self) -> None:
        for name in self.methods:
            if name not in LOCATE_METHODS:
                raise InvalidField("methods", f"unknown method {name!r}; "
                                  f"choose from {', '.join(LOCATE_METHODS)}.")
        for kind in self.trace_kinds:
            if kind not in ("resid", "mlp", "attn"):
                raise InvalidField("trace_kinds", f"{kind!r} is not resid, mlp or attn.")
        if self.corruption not in ("noise", "replace"):
            raise InvalidField("corruption", f"{self.corruption!r}; use noise or replace.")
        check_range("n_noise_samples", self.n_noise_samples, minimum=1)
        check_range("max_targets", self.max_targets, minimum=1, fix="null traces every target")
        check_range("noise_multiplier", self.noise_multiplier, minimum=0, fix="0 corrupts nothing; ROME uses 3")
        check_range("window", self.window, minimum=1)
        if self.unknown_names is not None and (not self.unknown_names or not all(
                isinstance(n, str) and n.strip() for n in self.unknown_names)):
            raise InvalidField("unknown_names", "give a list of non-empty names the model has never seen, or null "
                                                "for the world's unused names.")
