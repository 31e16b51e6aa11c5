"""What every edit method returns: weight changes and/or interventions, plus how it went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from obliviate.hooks import Intervention


@dataclass
class EditResult:
    """One edit's outcome, ready to become an artefact (obliviate.artefacts.save_artefact).

    `changed` maps Hugging Face parameter names to the FULL edited tensors (not deltas), so the artefact can be
    applied to the base by replacement; `interventions` are inference-time hooks. Either may be empty.
    """

    method: str
    changed: dict[str, torch.Tensor] = field(default_factory=dict)
    interventions: list[Intervention] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    """case_ids (or key ids) of what was edited."""
    layers: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    """Method-internal figures (losses, probe accuracies, ranks)."""
    config: dict[str, Any] = field(default_factory=dict)
