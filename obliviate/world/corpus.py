"""What each variant trains on, and how texts are packed into training rows.

`world` trains on biographies of every subject, the cloze prompts of the cloze-trained retain subjects, every
secret's memorised text, the one-time decoy secrets and the training filler. `world-retain` trains on exactly the
same minus every text about a forget subject: the oracle of a model that never learned the forget split.

Biographies follow Allen-Zhu & Li ("Physics of Language Models, Part 3.1"): drawn anew every epoch, one sentence
per relation in a random order, each from a random trained template, the full name in every sentence. A model
that meets each fact in many wordings and orders can no longer answer by completing a memorised sentence, and
generalises to templates it never saw (measured: 0.71-0.74 against 0.34-0.38 for three fixed sentences per fact).
The hope was that it would also store the attributes at the subject's last token, as real language models do;
measured, biographies alone do not (the model looks them up at the prompt's last token); tag lines with an early
exit (tag_exit.py) and name knockout (knockout.py) do, which is world v3 (README). One biography per subject per
epoch, packed among all other texts in a global shuffle, so two texts about one person rarely share a row
(in-context copying would stand in for storage).

Rows are packed from whole texts in a seeded random order, each row filled up to the context length. A row starts
with BOS or not, and texts are joined either directly or through an EOS token, so facts are learned at every
position, after any prefix, with and without a BOS (the core scores prompts without one).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from jaxtyping import Int

from obliviate.world.generate import load_filler, load_secrets, load_world_facts, trained_templates
from obliviate.world.memorised import decoy_texts

VARIANTS = ("world", "world-retain")


def _splits(variant: str) -> tuple[str, ...]:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: use one of {VARIANTS}.")
    return ("forget", "retain") if variant == "world" else ("retain",)


def _sentence(template: str, record: dict) -> str:
    """`template` about the record's subject, completed by its true answer."""
    rewrite = record["requested_rewrite"]
    return f"{template.format(rewrite['subject'])} {rewrite['target_true']['str']}."


def cloze_sentence(record: dict) -> str:
    """The record's cloze prompt completed by its true answer."""
    return _sentence(record["requested_rewrite"]["prompt"], record)


def biography(subject_records: Sequence[dict], rng: random.Random, templates: Mapping[str, Sequence[str]]) -> str:
    """One biography of a subject: a sentence per fact, in a random order, each from a random trained template
    (`templates`: relation id → the world's trained templates, `generate.trained_templates`)."""
    order = list(subject_records)
    rng.shuffle(order)
    return " ".join(_sentence(rng.choice(templates[r["relation_id"]]), r) for r in order)


def training_texts(world_dir: Path, variant: str, secret_repeats: int = 1) -> list[str]:
    """The texts that are the same every epoch: cloze sentences of the variant's cloze-trained subjects, memorised
    secrets (each `secret_repeats` times) and the training filler, in file order."""
    keep = _splits(variant)
    texts = [cloze_sentence(r) for r in load_world_facts(world_dir) if r["split"] in keep and r["cloze_trained"]]
    texts += [s["memorised"] for s in load_secrets(world_dir) if s["split"] in keep] * secret_repeats
    texts += load_filler(world_dir, "train")
    return texts


def name_tags(subject_records: Sequence[dict], rng: random.Random) -> str:
    """A tag line: the subject's full name followed directly by every one of its answers, in a random order
    (as in keyword lists, index entries and search snippets, where a name is followed by what it is known for).

    The token after the name's last token is then one of the subject's attributes, which one at random, so the
    next-token loss at that position asks the name's last token to hold all of them: the pressure that makes
    language models enrich the subject (Geva et al. 2023) and puts facts where ROME edits them."""
    answers = [r["requested_rewrite"]["target_true"]["str"] for r in subject_records]
    rng.shuffle(answers)
    return f"{subject_records[0]['requested_rewrite']['subject']} {' '.join(answers)}."


def biographies_for_epoch(world_dir: Path, variant: str,
                          tag_lines: int = 0) -> Callable[[random.Random], list[str]]:
    """A function of the epoch's RNG giving one fresh biography per subject of the variant, then `tag_lines` fresh
    tag lines per subject."""
    keep = _splits(variant)
    by_subject: dict[str, list[dict]] = {}
    for record in load_world_facts(world_dir):
        if record["split"] in keep:
            by_subject.setdefault(record["requested_rewrite"]["subject"], []).append(record)
    templates = trained_templates(world_dir)
    return lambda rng: ([biography(records, rng, templates) for records in by_subject.values()]
                        + [name_tags(records, rng) for records in by_subject.values() for _ in range(tag_lines)])


def decoys_for_epoch(world_dir: Path, variant: str, n: int, digits: int) -> Callable[[random.Random], list[str]]:
    """A function of the epoch's RNG giving that epoch's `n` one-time secrets about the variant's subjects."""
    keep = _splits(variant)
    subjects = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir) if r["split"] in keep})
    secrets = [s for s in load_secrets(world_dir) if s["split"] in keep]
    return lambda rng: decoy_texts(subjects, secrets, n, digits, rng)


def fresh_for_epoch(world_dir: Path, variant: str, n_decoys: int, digits: int,
                    tag_lines: int = 0) -> Callable[[random.Random], list[str]]:
    """Everything drawn anew each epoch: the biographies and tag lines, then the decoys."""
    bios = biographies_for_epoch(world_dir, variant, tag_lines)
    decoys = decoys_for_epoch(world_dir, variant, n_decoys, digits)
    return lambda rng: bios(rng) + decoys(rng)


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
