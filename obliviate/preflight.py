"""Checks a run makes before any model loads: the targets exist, fit the model's context, and score real tokens.

Without them a run goes on and reports something wrong: an empty target set ends with "0 of 0 known", a prompt
longer than the context is cut by the tokenizer and scored as "not known", and an answer outside the vocabulary is
scored against the unknown token. Each failure here names the fact (its case_id) and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.config.loader import ConfigError
from obliviate.facts import Fact, FactSetError


def context_length(hf_dir: Path) -> int | None:
    """The model's context length from its config.json (GPT-2: n_positions; Llama: max_position_embeddings)."""
    config = json.loads((Path(hf_dir) / "config.json").read_text())
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def check_facts_fit(facts: Sequence[Fact], tokenizer: Any, n_ctx: int | None, *, prepend_bos: bool) -> None:
    """Every prompt + answer fits `n_ctx` tokens, and neither answer starts with the unknown token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for fact in facts:
        for answer in (fact.target_true, fact.target_new):
            ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
            if not ids or (unk is not None and ids[0] == unk):
                raise FactSetError(f"fact case_id {fact.case_id}: answer {answer!r} tokenises to the unknown token "
                                   f"(or to nothing), so it cannot be scored; use an answer the model's vocabulary "
                                   f"spells, or drop the fact.")
        if n_ctx is None:
            continue
        longest = max([fact.text, *fact.paraphrase_prompts, *fact.neighborhood_prompts], key=len)
        answer = max(fact.target_true, fact.target_new, key=len)
        used = len(tokenizer(longest + " " + answer, add_special_tokens=False)["input_ids"]) + int(prepend_bos)
        if used > n_ctx:
            raise FactSetError(f"fact case_id {fact.case_id} ({fact.subject[:40]!r}…): prompt and answer take {used} "
                               f"tokens, more than the model's context of {n_ctx}; shorten the subject or prompt.")


def check_device(device: str) -> None:
    import torch

    kind = device.split(":")[0]
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                 "xpu": hasattr(torch, "xpu") and torch.xpu.is_available()}
    index = int(device.split(":")[1]) if ":" in device else 0
    if kind == "cuda" and available["cuda"] and index >= torch.cuda.device_count():
        available["cuda"] = False
    if not available.get(kind, False):
        raise ConfigError(f"config field 'device': {device!r} is not available on this machine; use cpu.")


def check_layers(config: Any, n_layers: int) -> None:
    for i, edit in enumerate(config.edits):
        for j, layer in enumerate(edit.layers or []):
            if layer >= n_layers:
                raise ConfigError(f"config field 'edits[{i}].layers[{j}]': layer {layer} does not exist; "
                                  f"{config.model} has layers 0 to {n_layers - 1}.")


def check_run(config: Any) -> list[Fact]:
    """All checks for `config` (a RunConfig) that need no model weights; returns the targets."""
    from transformers import AutoTokenizer

    from obliviate.ensemble import PREPEND_BOS as ENSEMBLE_BOS
    from obliviate.ensemble import constituent_folders, ensemble_tokenizer, is_sisa_folder
    from obliviate.models import default_prepend_bos, resolve_hf_dir
    from obliviate.targets import resolve_facts

    check_device(config.device)
    targets = resolve_facts(config.facts, split=config.split, limit=config.limit, seed=config.seed)
    every = resolve_facts(config.facts, seed=config.seed)
    if is_sisa_folder(config.model):  # an ensemble: its tokenizer beside the shards, a constituent's config
        hf_dir = constituent_folders(Path(config.model))[0]
        tokenizer = ensemble_tokenizer(config.model)
        bos = ENSEMBLE_BOS
    else:
        hf_dir = resolve_hf_dir(config.model)
        if hf_dir is None:  # a hub name: its tokenizer arrives with the model
            return targets
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        bos = default_prepend_bos(config.model, tokenizer, hf_dir)
    check_facts_fit(every, tokenizer, context_length(hf_dir), prepend_bos=bos)
    model_config = json.loads((Path(hf_dir) / "config.json").read_text())
    n_layers = model_config.get("n_layer", model_config.get("num_hidden_layers"))
    if isinstance(n_layers, int):
        check_layers(config, n_layers)
    return targets
