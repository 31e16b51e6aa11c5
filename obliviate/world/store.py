"""The world and its models in the cache: built on first use, returned at once afterwards.

Layout: cache_subdir("world", RECIPE, f"seed{seed}") holds `data/` (the world files) and one HF folder per variant.
RECIPE combines a hand-bumped version (for changes to names, templates, grammar or training code) with a hash of
the default configs, so any recipe change lands in a fresh folder instead of reusing a stale one. Builds run under
a file lock and write atomically, so concurrent callers (two test sessions, say) build once and never see a
half-written folder.

The default recipe's models (seed 0) ship with the package (obliviate/data/world_models, 7 MB of safetensors
with their training_info.json): training both takes about 11 minutes on 2 cores, so a clean machine copies them
into the cache instead, after checking each file's sha256 against the manifest. The manifest names the recipe they
were trained with; a changed recipe (or another seed) finds no shipped match and trains, and
tests/test_world.py fails until the shipped models are retrained (``obliviate world train --retrain``) and copied
back. The tokenizer is never shipped: it is rebuilt from the world files, as for a trained model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from obliviate.integrity import file_sha256
from obliviate.paths import cache_subdir
from obliviate.world.atomic import atomic_folder, file_lock
from obliviate.world.config import TrainConfig, WorldConfig, recipe_options, world_options
RECIPE_VERSION = "v2"

WORLD_MODELS: dict[str, tuple[str, int]] = {
    "world": ("world", 0),
    "world-retain": ("world-retain", 0),
    "world-retain-2": ("world-retain", 1),
}
"""Embedded world model → (the texts it trains on: corpus.VARIANTS, offset added to the seed of its weights and
data order). `world-retain-2` is a second never-taught model: the oracle's texts and recipe from another seed, so
the audit can measure how far two models that never saw the forget split lie apart on the same target (the spread
its margins must cover; audit/verdict.py `peers`)."""


def recipe_id() -> str:
    """RECIPE_VERSION plus a short hash of the default configs (seed excluded: it names the folder)."""
    configs = {name: {k: v for k, v in options.items() if k != "seed"}
               for name, options in (("world", world_options(WorldConfig())), ("train", recipe_options(TrainConfig())))}
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


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "world_models"
SHIPPED_MANIFEST = "manifest.json"
SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "training_info.json")


def shipped_manifest() -> dict | None:
    """The shipped models' manifest (recipe, seed, sha256 per file), or None if the package carries none."""
    path = SHIPPED_DIR / SHIPPED_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_model(variant: str, seed: int = 0) -> Path | None:
    """The shipped folder of `variant` if it was trained with the current recipe and this seed, else None."""
    manifest = shipped_manifest()
    if manifest is None or manifest["recipe"] != recipe_id() or manifest["seed"] != seed:
        return None
    folder = SHIPPED_DIR / variant
    return folder if all((folder / name).is_file() for name in SHIPPED_FILES) else None


def _install_shipped(shipped: Path, variant: str, world_dir: Path, out_dir: Path) -> None:
    """Copy a shipped model into the cache (sha256-checked) with the tokenizer rebuilt from the world."""
    from obliviate.world.tokenizer import build_tokenizer

    manifest = shipped_manifest()
    # the world files the models were trained on (generate.WORLD_FILES): a generator change that alters them under
    # the same recipe id would otherwise go unnoticed, and --retrain would no longer reproduce the shipped models
    for name, want in manifest.get("world_files", {}).items():
        digest = file_sha256(world_dir / name)
        if digest != want:
            raise RuntimeError(f"the world built here ({world_dir / name}, sha256 {digest}) is not the one the "
                               f"shipped models were trained on: the world generator changed without a new recipe. "
                               f"Restore its output, or bump RECIPE_VERSION in obliviate/world/store.py and retrain "
                               f"(`obliviate world train --retrain`).")
    expected = manifest["files"]
    with atomic_folder(out_dir) as tmp:
        for name in SHIPPED_FILES:
            data = (shipped / name).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected[f"{variant}/{name}"]:
                raise RuntimeError(f"shipped {variant}/{name} does not match its manifest (sha256 {digest}); "
                                   f"the package is damaged: reinstall it or run `obliviate world train --retrain`.")
            (tmp / name).write_bytes(data)
        n_positions = json.loads((shipped / "config.json").read_text())["n_positions"]
        build_tokenizer(world_dir, model_max_length=n_positions).save_pretrained(tmp)


def ensure_world_model(variant: str = "world", seed: int = 0, show_progress: bool = False,
                       retrain: bool = False) -> Path:
    """The trained HF folder of `variant` (a name of WORLD_MODELS) for the world of `seed`.

    Missing from the cache, it is copied from the shipped models when they match the recipe and seed, and trained
    otherwise; `retrain=True` trains it from scratch in any case (replacing the cached folder atomically).
    """
    from obliviate.world.train import TRAINING_INFO, train_world_model

    if variant not in WORLD_MODELS:
        raise ValueError(f"variant {variant!r}: use one of {tuple(WORLD_MODELS)}.")
    texts, seed_offset = WORLD_MODELS[variant]
    folder = world_root(seed) / variant
    if (folder / TRAINING_INFO).is_file() and not retrain:
        return folder
    world_dir = ensure_world(seed)
    with file_lock(world_root(seed) / f".{variant}.lock"):
        if retrain or not (folder / TRAINING_INFO).is_file():
            shipped = None if retrain else shipped_model(variant, seed)
            if shipped is not None:
                _install_shipped(shipped, variant, world_dir, folder)
            else:
                train_world_model(world_dir, texts, TrainConfig(seed=seed + seed_offset), folder,
                                  show_progress=show_progress)
    return folder
