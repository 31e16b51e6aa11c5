"""The fact world: a deterministic synthetic world of fictional facts and two small GPT-2 models trained on it.

`world` is trained on every fact, secret and training filler line; `world-retain` on the same recipe (seed,
hyper-parameters, optimiser steps) without the forget split, the ground-truth "never learned" oracle for judging
unlearning. Modules, one job each:

- config.py     WorldConfig, TrainConfig
- names.py      invented multi-token subject names
- relations.py  relations, answer values, trained / held-out templates
- filler.py     fact-free filler grammar (trained and held-out streams)
- memorised.py  secrets M / C / B for the memorisation probe
- generate.py   build_world and the loaders of its files
- tokenizer.py  the WordPiece world tokenizer
- corpus.py     each variant's training texts and row packing
- train.py      train_world_model
- evaluate.py   recall and log-prob helpers on HF models
- store.py      ensure_world / ensure_world_model (the cache)
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: `import obliviate.world.config` (the CLI's --help) must not pull in torch and transformers.
_EXPORTS = {
    "TrainConfig": "config", "WorldConfig": "config",
    "build_world": "generate", "load_filler": "generate", "load_secrets": "generate",
    "load_world_facts": "generate", "load_world_info": "generate",
    "ensure_world": "store", "ensure_world_model": "store", "recipe_id": "store",
    "train_world_model": "train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'obliviate.world' has no attribute {name!r}")
    return getattr(importlib.import_module(f"obliviate.world.{_EXPORTS[name]}"), name)
