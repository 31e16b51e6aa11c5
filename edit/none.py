"""The no-op edit: the unedited model, audited like any other (the audit's "intact" row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edit.result import EditRequest, EditResult
from obliviate.registry import EDITS, Spec


@dataclass
class NoneConfig:
    """The no-op edit has no settings."""


@EDITS.register("none", NoneConfig, spec=Spec(goals=("erase", "rewrite"), layers="none"))
def no_edit(handle: Any, request: EditRequest, cfg: NoneConfig) -> EditResult:
    """No edit: nothing changes (a baseline row)."""
    return EditResult(method="none", targets=[f.case_id for f in request.targets])
