"""Helpers for tests on the trained fact world (`world`, `world-retain`)."""

from __future__ import annotations


def known_forget_targets(handle, n: int):
    """Up to n forget-split facts the handle recalls (top-1); fails if the model knows fewer than min(n, 8)."""
    from locate.causal_trace import known_facts
    from obliviate.targets import resolve_facts

    known, _ = known_facts(handle, resolve_facts("world", split="forget"))
    assert len(known) >= min(n, 8), f"the world model recalls only {len(known)} forget facts"
    return known[:n]
