"""`obliviate run`: locate → edit → audit in one go, each stage skipped when already finished (unless forced)."""

from __future__ import annotations

from typing import Any

from obliviate.config import RunConfig
from obliviate.results import RunDir


def run(config: RunConfig, run_dir: RunDir, *, force: bool = False) -> dict[str, Any]:
    import audit.stage
    import edit.stage
    import locate.stage

    edit.stage.check_params(config)
    located = locate.stage.run(config, run_dir, force=force)
    edited = edit.stage.run(config, run_dir, force=force) if config.edits else []
    audited = audit.stage.run(config, run_dir, force=force) if config.edits else []
    return {"locate": located, "edit": edited, "audit": audited}
