"""The whole-run config: model, targets, seed, and the three stages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simple_parsing.helpers import field as cli_field

from obliviate.config.audit import AuditConfig
from obliviate.config.edit import EditConfig, OperatingPoint
from obliviate.config.loader import InvalidField, check_range
from obliviate.config.locate import LocateConfig

DEVICE = re.compile(r"cpu|mps|(cuda|xpu)(:\d+)?")


@dataclass
class RunConfig:
    model: str = "world"
    """Model to load: world, world-retain, smollm2-135m, gemma-3-270m, a TransformerLens official name, or a local
    HF folder."""
    facts: str = "world"
    """Fact set: 'world' (the embedded world), 'smollm2' / 'gemma3' (the packaged real facts of those models), a
    .jsonl path or a hub name."""
    split: str | None = "forget"
    """Targets are the facts of this split (forget / retain); None takes all facts."""
    limit: int | None = None
    """Take at most this many targets."""
    seed: int = 0
    """Seed for every random choice of the run (noise, probes, training, sampling)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, mps or xpu[:N]."""
    locate: LocateConfig = field(default_factory=LocateConfig)
    # A list of dataclasses cannot be spelled as flags; edits are set in the YAML config only.
    edits: list[EditConfig] = cli_field(default_factory=lambda: [EditConfig()], cmd=False)
    """Edits to make and audit, each in its own slot of the run folder (YAML only)."""
    audit: AuditConfig = field(default_factory=AuditConfig)
    operating_point: OperatingPoint | None = cli_field(default=None, cmd=False)
    """Search each edit's strength knob to this forgetting (None: every edit at its configured params; YAML only)."""

    def validate(self) -> None:
        if self.split not in (None, "forget", "retain"):
            raise InvalidField("split", f"{self.split!r}; use forget, retain or null.")
        check_range("limit", self.limit, minimum=1, fix="null takes every target")
        check_range("seed", self.seed, minimum=0, maximum=2**32 - 1)
        if not DEVICE.fullmatch(self.device):
            raise InvalidField("device", f"{self.device!r} is not a torch device; use cpu, cuda, cuda:N, mps or xpu.")
        labels = [e.label for e in self.edits]
        if len(set(labels)) != len(labels):
            raise InvalidField("edits", f"two edits share the name {labels}; give each a 'name'.")
        self.check_params()
        if self.operating_point is not None and self.operating_point.parsed()[0] and not self.audit.reference:
            raise InvalidField("operating_point.forget_recall", "is relative to the oracle, but audit.reference is "
                               "null; give a number or name a reference model.")

    def check_params(self) -> None:
        """Every edit's and attack's params built by its config dataclass, here at load time, so a bad value fails
        before any stage runs; the error names the full key path (a ConfigError passes from_dict unchanged)."""
        from obliviate.registry import EDITS

        for i, edit in enumerate(self.edits):
            EDITS.get(edit.method).params(edit.params, where=f"edits[{i}].params")
        self.audit.check_params("audit")
