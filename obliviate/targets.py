"""Resolve a run config's fact source into facts: the embedded world, the packaged SmolLM2 set, a file or hub name."""

from __future__ import annotations

from pathlib import Path

from obliviate.facts import Fact, load_facts

SMOLLM2_FACTS = Path(__file__).parent / "data" / "smollm2_facts.jsonl"


def fact_source_path(source: str, *, seed: int = 0) -> str | Path:
    """'world' → the world's facts.jsonl (built on first use); 'smollm2' → the packaged real-fact set."""
    if source == "world":
        from obliviate.world import ensure_world

        return ensure_world(seed=seed) / "facts.jsonl"
    if source == "smollm2":
        return SMOLLM2_FACTS
    return source


def resolve_facts(source: str, *, split: str | None = None, limit: int | None = None, seed: int = 0) -> list[Fact]:
    """All facts of `source`, optionally one split, optionally the first `limit`."""
    return load_facts(fact_source_path(source, seed=seed), split=split, limit=limit)
