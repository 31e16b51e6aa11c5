"""Resolve a run config's fact source into facts: the embedded world, a packaged real-model set, a file or hub name."""

from __future__ import annotations

from pathlib import Path

from obliviate.facts import Fact, load_facts

SMOLLM2_FACTS = Path(__file__).parent / "data" / "smollm2_facts.jsonl"
GEMMA3_FACTS = Path(__file__).parent / "data" / "gemma3_facts.jsonl"
PACKAGED_FACTS = {"smollm2": SMOLLM2_FACTS, "gemma3": GEMMA3_FACTS}
"""Facts each registry model knows (top-1), built by ``obliviate.data.make_smollm2_facts``."""
MODEL_FACTS = {"smollm2-135m": "smollm2", "gemma-3-270m": "gemma3"}
"""The packaged fact source of each registry model."""


def fact_source_path(source: str, *, seed: int = 0) -> str | Path:
    """'world' → the world's facts.jsonl (built on first use); 'smollm2' / 'gemma3' → a packaged real-fact set."""
    if source == "world":
        from obliviate.world import ensure_world

        return ensure_world(seed=seed) / "facts.jsonl"
    if source in PACKAGED_FACTS:
        return PACKAGED_FACTS[source]
    return source


def resolve_facts(source: str, *, split: str | None = None, limit: int | None = None, seed: int = 0) -> list[Fact]:
    """All facts of `source`, optionally one split, optionally the first `limit`."""
    return load_facts(fact_source_path(source, seed=seed), split=split, limit=limit)
