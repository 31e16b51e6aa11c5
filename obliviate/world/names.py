"""Invented subject names: a given name and a surname, each of two syllables from fixed inventories.

Syllables are shared across many names, so no single token identifies a subject. Surnames are unique per subject
as syllable PAIRS (head + tail), while given names repeat. Measured on world v2: with 200 subjects the given name
and the surname head already fix almost every subject, so the model identifies the person on the surname head
(the STR trace's MLP peak sits there) and the tail is predictable; names that complete only at their last token
were tried and learned about three times slower (README).
The tokenizer keeps each syllable a token (see tokenizer.py), so a subject spans four tokens, e.g.
"Vorlak Danthe" → [Vor, ##lak, Dan, ##the].
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

# Heads open a name word (capitalised), tails close it. Letter patterns chosen to be rare in English text.
GIVEN_HEADS = ("Vor", "Dar", "Kel", "Mir", "Tav", "Zor", "Bel", "Quin", "Fen", "Lor", "Ryn", "Sal", "Thal", "Yor",
               "Gav", "Ner")
GIVEN_TAILS = ("lak", "wen", "dris", "mesh", "vik", "anne", "ek", "ith", "ova", "un", "rai", "ius")
SURNAME_HEADS = ("Dan", "Mor", "Vesh", "Kro", "Ulm", "Brev", "Tor", "Hask", "Pell", "Graf", "Osk", "Wend", "Zar",
                 "Cul", "Jass", "Ild", "Prax", "Sorn", "Yev", "Drom", "Keth", "Lusk", "Nib", "Quor")
SURNAME_TAILS = ("the", "vane", "rik", "oss", "ander", "wyck", "ely", "ard", "ung", "esti", "ovar", "emm", "olt",
                 "aske", "uin", "erra", "iks", "ome", "yth", "ast")


@dataclass(frozen=True)
class Name:
    """A subject's name as syllables: (head, tail) of the given name and of the surname."""

    given: tuple[str, str]
    surname: tuple[str, str]

    @property
    def text(self) -> str:
        return f"{''.join(self.given)} {''.join(self.surname)}"

    @property
    def words(self) -> dict[str, tuple[str, str]]:
        """Each name word with its syllables."""
        return {"".join(self.given): self.given, "".join(self.surname): self.surname}


def make_names(n: int, rng: random.Random) -> list[Name]:
    """`n` names with distinct surnames (so no name is a substring of another); given names may repeat."""
    capacity = len(SURNAME_HEADS) * len(SURNAME_TAILS)
    if n > capacity:
        raise ValueError(f"{n} subjects asked for; the surname inventories allow {capacity}.")
    surnames = rng.sample([(h, t) for h in SURNAME_HEADS for t in SURNAME_TAILS], n)
    return [Name(given=(rng.choice(GIVEN_HEADS), rng.choice(GIVEN_TAILS)), surname=surname) for surname in surnames]


def name_pieces(names: list[Name]) -> dict[str, list[str]]:
    """Every name word → its syllables (what the tokenizer needs to split names the same way everywhere)."""
    pieces: dict[str, list[str]] = {}
    for name in names:
        for word, syllables in name.words.items():
            pieces[word] = list(syllables)
    return dict(sorted(pieces.items()))


def unused_names(taken: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """`n` names of the world's form whose surnames no subject in `taken` has: subjects a world model never saw
    (locate/subject_ablation.py's reference for "unknown")."""
    surnames = {name.split()[-1] for name in taken}
    free = [h + t for h in SURNAME_HEADS for t in SURNAME_TAILS if h + t not in surnames]
    if n > len(free):
        raise ValueError(f"{n} unused names asked for; only {len(free)} surnames are free of the {len(taken)} taken.")
    return [f"{rng.choice(GIVEN_HEADS)}{rng.choice(GIVEN_TAILS)} {surname}" for surname in rng.sample(free, n)]
