"""Where obliviate keeps what it builds: worlds, trained models, converted checkpoints, statistics."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: $OBLIVIATE_CACHE if set, else ~/.cache/obliviate. Created on first use."""
    root = Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_subdir(*parts: str) -> Path:
    """A named folder inside the cache, created if missing."""
    path = cache_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
