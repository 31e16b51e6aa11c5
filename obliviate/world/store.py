"""The world and its models in the cache: built on first use, returned at once afterwards.

Layout: cache_subdir("world", RECIPE, f"seed{seed}") holds `data/` (the world files) and one HF folder per variant.
RECIPE combines a hand-bumped version (for changes to names, templates, grammar or training code) with a hash of
the default configs, so any recipe change lands in a fresh folder instead of reusing a stale one. Builds run under
a file lock and write atomically, so concurrent callers (two test sessions, say) build once and never see a
half-written folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from obliviate.paths import cache_subdir
from obliviate.world.atomic import file_lock
from obliviate.world.config import TrainConfig, WorldConfig
from obliviate.world.corpus import VARIANTS

RECIPE_VERSION = "v1"


def recipe_id() -> str:
    """RECIPE_VERSION plus a short hash of the default configs (seed excluded: it names the folder)."""
    configs = {name: {k: v for k, v in asdict(cls()).items() if k != "seed"}
               for name, cls in (("world", WorldConfig), ("train", TrainConfig))}
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:8]
    return f"{RECIPE_VERSION}-{digest}"


def world_root(seed: int = 0) -> Path:
    return cache_subdir("world", recipe_id(), f"seed{seed}")


def ensure_world(seed: int = 0) -> Path:
    """The world data folder for `seed` (facts.jsonl, secrets.jsonl, filler, world_info.json), built if missing."""
    from obliviate.world.generate import INFO_FILE, build_world

    folder = world_root(seed) / "data"
    if (folder / INFO_FILE).is_file():
        return folder
    with file_lock(world_root(seed) / ".data.lock"):
        if not (folder / INFO_FILE).is_file():
            build_world(WorldConfig(seed=seed), folder)
    return folder


def ensure_world_model(variant: str = "world", seed: int = 0, show_progress: bool = False) -> Path:
    """The trained HF folder of `variant` ("world" or "world-retain") for `seed`, trained if missing."""
    from obliviate.world.train import TRAINING_INFO, train_world_model

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: use one of {VARIANTS}.")
    folder = world_root(seed) / variant
    if (folder / TRAINING_INFO).is_file():
        return folder
    world_dir = ensure_world(seed)
    with file_lock(world_root(seed) / f".{variant}.lock"):
        if not (folder / TRAINING_INFO).is_file():
            train_world_model(world_dir, variant, TrainConfig(seed=seed), folder, show_progress=show_progress)
    return folder
