"""What every edit method takes and returns: one EditRequest in, one EditResult out (`obliviate.registry.EDITS`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from obliviate.facts import Fact
from obliviate.hooks import Intervention


@dataclass(frozen=True)
class EditRequest:
    """What to edit: the same for every method. A method honours `goal` and `layers` or the registry refuses them
    before it runs (`obliviate.registry.Entry.check_request`)."""

    targets: Sequence[Fact]
    """Facts to forget (or rewrite)."""
    retain: Sequence[Fact] = ()
    """Facts to keep (the retain terms of GradDiff / NPO / RMU, the contrast of steering and LEACE)."""
    goal: Literal["erase", "rewrite"] = "erase"
    layers: list[int] | None = None
    """Layers the user asked for (EditConfig.layers): honoured exactly."""
    proposed: list[int] | None = None
    """Layers the locate stage proposed for this method (its `Spec.proposal`): used when neither `layers` nor the
    method's own config names any."""
    seed: int = 0
    secrets: Sequence[Any] | None = None
    """Memorised texts of the targets (PGA, LEACE's memorisation concept); None = the world's secrets of the
    targets' split."""

    def pick(self, own: Sequence[int] | None = None, default: Sequence[int] | None = None) -> list[int] | None:
        """The layers to use: the request's, else the method config's own, else locate's proposal, else default."""
        for choice in (self.layers, own, self.proposed, default):
            if choice:
                return [int(x) for x in choice]
        return None

    def memorised(self) -> list[Any]:
        """The targets' secrets (`locate.memorisation_probe.Secret`)."""
        from locate.memorisation_probe import Secret, load_secrets

        if self.secrets is not None:
            return [Secret.from_record(s) for s in self.secrets]
        from obliviate.world import ensure_world

        split = self.targets[0].split if self.targets else None
        return load_secrets(ensure_world(seed=self.seed) / "secrets.jsonl", split=split)


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
    """The layers the edit really acted on (the stage records these, not what was asked)."""
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    """Method-internal figures (losses, probe accuracies, ranks)."""
    config: dict[str, Any] = field(default_factory=dict)


def run_method(name: str, handle: Any, request: EditRequest, cfg: Any = None) -> EditResult:
    """Run the registered edit method `name` on `request` (its config built from defaults when `cfg` is None)."""
    from obliviate.registry import EDITS

    entry = EDITS.get(name)
    entry.check_request(request.goal, request.layers)
    result = entry.function(handle, request, cfg if cfg is not None else entry.params())
    result.method = name
    return result
