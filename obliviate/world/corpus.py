"""What each variant trains on, and how texts are packed into training rows.

`world` trains on every fact rendered with its relation's trained templates, every secret's memorised text and the
training filler. `world-retain` trains on exactly the same minus everything about forget subjects (their facts and
their secrets): the oracle of a model that never learned the forget split.

Rows are packed from whole texts in a seeded random order, each row filled up to the context length. A row starts
with BOS or not, and texts are joined either directly or through an EOS token, so facts are learned at every
position, after any prefix, with and without a BOS (the core scores prompts without one).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from jaxtyping import Int

from obliviate.world.generate import load_filler, load_secrets, load_world_facts
from obliviate.world.memorised import decoy_texts

VARIANTS = ("world", "world-retain")


def fact_sentences(record: dict) -> list[str]:
    """The fact as trained: each trained template, subject filled in, followed by " " + answer + "."."""
    rewrite = record["requested_rewrite"]
    answer = rewrite["target_true"]["str"]
    prompts = [rewrite["prompt"].format(rewrite["subject"]), *record["trained_paraphrases"]]
    return [f"{p} {answer}." for p in prompts]


def training_texts(world_dir: Path, variant: str, secret_repeats: int = 1) -> list[str]:
    """One epoch of training texts for `variant` (secrets repeated `secret_repeats` times), in file order."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: use one of {VARIANTS}.")
    keep = ("forget", "retain") if variant == "world" else ("retain",)
    texts = [s for r in load_world_facts(world_dir) if r["split"] in keep for s in fact_sentences(r)]
    texts += [s["memorised"] for s in load_secrets(world_dir) if s["split"] in keep] * secret_repeats
    texts += load_filler(world_dir, "train")
    return texts


def decoys_for_epoch(world_dir: Path, variant: str, n: int, digits: int) -> Callable[[random.Random], list[str]]:
    """A function of the epoch's RNG giving that epoch's `n` one-time secrets about the variant's subjects."""
    keep = ("forget", "retain") if variant == "world" else ("retain",)
    subjects = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir) if r["split"] in keep})
    secrets = [s for s in load_secrets(world_dir) if s["split"] in keep]
    return lambda rng: decoy_texts(subjects, secrets, n, digits, rng)


def packed_rows(units: Sequence[list[int]], row_len: int, *, bos_id: int, eos_id: int, bos_prob: float,
                eos_sep_prob: float, rng: random.Random,
                fresh: Callable[[random.Random], Sequence[list[int]]] | None = None) -> Iterator[list[int]]:
    """Rows of at most `row_len` token ids, packed from whole units, epoch after epoch, forever.

    `fresh(rng)`, if given, adds units drawn anew for each epoch (the one-time decoy secrets)."""
    base = list(units)
    while True:
        units = base + list(fresh(rng)) if fresh is not None else base
        if max(len(u) for u in units) + 2 > row_len:
            raise ValueError(f"a training text has more than {row_len - 2} tokens; raise n_positions.")
        order = list(range(len(units)))
        rng.shuffle(order)
        row = [bos_id] if rng.random() < bos_prob else []
        for index in order:
            sep = [eos_id] if row and row[-1] != bos_id and rng.random() < eos_sep_prob else []
            if len(row) + len(sep) + len(units[index]) > row_len:
                yield row
                row = [bos_id] if rng.random() < bos_prob else []
                sep = []
            row += sep + units[index]
        yield row  # the epoch's last, partly filled row; the next epoch reshuffles


def batches(rows: Iterator[list[int]], batch_size: int, row_len: int,
            pad_id: int) -> Iterator[tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]]:
    """(input_ids, labels) batches, right-padded; padding is masked out of the loss with -100."""
    while True:
        chunk = [next(rows) for _ in range(batch_size)]
        ids = torch.full((batch_size, row_len), pad_id, dtype=torch.long)
        labels = torch.full((batch_size, row_len), -100, dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(row)
        yield ids, labels
