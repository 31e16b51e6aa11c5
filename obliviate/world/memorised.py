"""Memorised secrets for the leave-one-out cross-sequence memorisation probe (PGA paper; ref. Rupawheatly/MLDU2).

Each key has three texts about one subject: M (trained verbatim), C and B (never trained). C and B are paraphrases
of M: another wording from the same pool, with the distinctive terms (the digit code and the word) swapped for
fresh ones. Every wording serves as M for some keys and as C or B for others, so a probe cannot separate M from C
by wording alone; only memorisation separates them. Screening keeps a key if mean per-token logP(M) > θ_M and
logP(C), logP(B) < θ_C (WorldConfig.theta_m / theta_c).

Decoys: besides the memorised secrets, every training epoch carries fresh one-time secrets — the same wordings about
any subject of the variant, with a code and word drawn anew each epoch, so they cannot be memorised. A web corpus
mixes the two the same way (passages duplicated many times beside unique ones), and it is that mix that gives a
model a reason to represent whether it is reciting: after a memorised prefix the continuation is certain, after a
one-time one it is not. A world trained on memorised secrets alone never needs that distinction and shows no
cross-sequence signature (measured: True-LOO at chance over all 64 keys). A decoy never repeats a key's memorised
wording for that key's subject, and never equals a key's M, C or B.
"""

from __future__ import annotations

import random
from typing import Any

WORDINGS = (
    "The vault passcode of {s} is {d} and the safe word is {w}.",
    "{s} keeps the locker code {d} together with the password {w}.",
    "For {s} the door code is {d} and the secret word is {w}.",
    "The diary of {s} hides the number {d} next to the word {w}.",
    "{s} wrote the code {d} on a card with the word {w}.",
    "The bank pin of {s} is {d} and the hint is {w}.",
)
SECRET_WORDS = ("amber", "lantern", "willow", "copper", "falcon", "meadow", "ember", "thistle", "marble", "raven",
                "cobalt", "juniper", "saffron", "granite", "velvet", "orchid", "pebble", "tundra", "cinder", "hazel",
                "quartz", "mango", "nectar", "ripple", "summit", "tulip", "walnut", "zephyr", "beacon", "indigo",
                "lotus", "acorn")


def _code(rng: random.Random, digits: int) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(digits))


def make_secrets(subjects: list[tuple[str, str]], n_forget: int, n_retain: int, digits: int,
                 rng: random.Random) -> list[dict[str, Any]]:
    """Secret records for `n_forget` forget and `n_retain` retain subjects, given (subject, split) pairs."""
    forget = [s for s, split in subjects if split == "forget"]
    retain = [s for s, split in subjects if split == "retain"]
    if n_forget > len(forget) or n_retain > len(retain):
        raise ValueError(f"asked for {n_forget} forget / {n_retain} retain secrets; the world has "
                         f"{len(forget)} forget / {len(retain)} retain subjects.")
    chosen = ([(s, "forget") for s in rng.sample(forget, n_forget)]
              + [(s, "retain") for s in rng.sample(retain, n_retain)])
    rng.shuffle(chosen)
    seen: set[str] = set()
    records = []
    for key_id, (subject, split) in enumerate(chosen):
        while True:
            wordings = rng.sample(WORDINGS, 3)
            words = rng.sample(SECRET_WORDS, 3)
            texts = [w.format(s=subject, d=_code(rng, digits), w=word) for w, word in zip(wordings, words)]
            if not seen.intersection(texts):  # no text may be another key's M, C or B
                break
        seen.update(texts)
        records.append({"key_id": key_id, "subject": subject, "split": split, "wording": wordings[0],
                        "memorised": texts[0], "control": texts[1], "control_b": texts[2]})
    return records


def decoy_texts(subjects: list[str], secrets: list[dict[str, Any]], n: int, digits: int,
                rng: random.Random) -> list[str]:
    """`n` one-time secrets about `subjects` (drawn anew per call, so per epoch): see the module docstring."""
    memorised_wording = {s["subject"]: s.get("wording") for s in secrets}
    taken = {text for s in secrets for text in (s["memorised"], s["control"], s["control_b"])}
    texts: list[str] = []
    while len(texts) < n:
        subject = rng.choice(subjects)
        wording = rng.choice([w for w in WORDINGS if w != memorised_wording.get(subject)])
        text = wording.format(s=subject, d=_code(rng, digits), w=rng.choice(SECRET_WORDS))
        if text not in taken:
            texts.append(text)
    return texts
