"""The model's own vocabulary as keys to keep a rank-one edit off: a bank of down-projection inputs, one per word.

ROME's update ΔW = u vᵀ moves every key k by (k·u) v. With u = C⁻¹k* (or the least-norm u of `every_key_direction`)
the keys of the edited subject's own kind — other countries of its continent, other red fruits, other fish — share
k*'s direction more than C (a corpus average) accounts for, and take a share of the new answer with them: on
SmolLM2 at layer 4, 25 of 113 same-answer neighbour prompts of the fresh fact set read ≥ 0.3 of the edit (README,
"ROME on SmolLM2"). The references' Wikipedia statistics hold many entity mentions; no local corpus does.

Here the model supplies the entities. Every whole-word token of its vocabulary (a leading-space token of at least
`MIN_LETTERS` ASCII letters: ~28k for SmolLM2) is read in a neutral frame ("{} is mentioned in many books.", the
covariance module's PLACE_SENTENCES) at its last token, in the edited block: the bank. For an edit, the `count`
bank keys nearest k* (cosine after removing the bank mean; words inside the subject's own name left out) join C
as a preservation term, u minimising uᵀ(C + weight/count · ΣKₙKₙᵀ)u under the same constraints as before — the
form MEMIT gives its preserved keys (Meng et al. 2023, "Mass-Editing Memory in a Transformer", eq. 14; reference
kmeng01/memit ``memit/memit_main.py``), restricted to the subject's nearest kin. The solve goes through Woodbury's
identity on C's factor, so the cost per edit is one count × count system.

The bank is cached per (weights the keys depend on, layer, tokenizer, frames, seed) under
``obliviate.paths.cache_subdir("stats")``, in float16, sealed like C.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Bool, Float

from edit.context import right_padded
from edit.covariance import PLACE_SENTENCES, MetricSolver, key_weights_hash
from edit.sites import edit_site
from obliviate.config.loader import check_range
from obliviate.integrity import CacheIntegrityError, seal, verify
from obliviate.paths import cache_subdir
from obliviate.results import atomic_save_tensors, load_tensors

MIN_LETTERS = 4
"""Shorter tokens are mostly fragments and function words."""
WORD_MARKERS = ("Ġ", "▁")
"""Byte-level BPE's (GPT-2, SmolLM2) and SentencePiece's (Gemma) leading-space marks."""
BANK_VERSION = "1"


def vocabulary_words(tokenizer, limit: int = 30_000) -> list[str]:
    """Whole-word tokens of the vocabulary (leading-space mark, ASCII letters only, ≥ MIN_LETTERS), lowest token id
    first — about the tokenizer's merge order, so frequent words first — at most `limit`, without repeats. A
    vocabulary without any leading-space mark is word-level: each token of letters counts."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    marked = any(token[:1] in WORD_MARKERS for token, _ in vocab)  # else a word-level vocabulary: every token a word
    seen: set[str] = set()
    words = []
    for token, _ in vocab:
        if marked and token[:1] not in WORD_MARKERS:
            continue
        word = token[1:] if marked else token
        if len(word) >= MIN_LETTERS and word.isascii() and word.isalpha() and word not in seen:
            seen.add(word)
            words.append(word)
            if len(words) == limit:
                break
    return words


@dataclass(frozen=True)
class WordKeys:
    """The bank: each word's key at `layer` (float16 rows) and their mean."""

    words: list[str]
    keys: Float[torch.Tensor, "n_words d_mlp"]
    mean: Float[torch.Tensor, " d_mlp"]

    @cached_property
    def _centred(self) -> tuple[Float[torch.Tensor, "n_words d_mlp"], Float[torch.Tensor, " n_words"]]:
        """The keys less their mean, and those rows' norms: the same for every edit, so computed once per bank
        (float32: twice the float16 bank's memory, for as long as the process keeps the bank)."""
        centred = self.keys.float() - self.mean
        return centred, centred.norm(dim=1)

    def nearest(self, key: Float[torch.Tensor, " d_mlp"], count: int,
                excluded: Bool[torch.Tensor, " n_words"]) -> list[int]:
        """Rows of the `count` words whose keys are nearest `key` by cosine after removing the bank mean, leaving
        out the `excluded` words — the edited subjects' own (`inside`): a subject's name must keep its edit."""
        centred, norms = self._centred
        direction = key.float() - self.mean
        cosine = (centred @ direction) / (norms * direction.norm()).clamp(min=1e-12)
        cosine[excluded] = -2.0
        return cosine.topk(min(count, len(self.words))).indices.tolist()

    def inside(self, names: Sequence[str]) -> Bool[torch.Tensor, " n_words"]:
        """Which words lie inside any of `names` (case-insensitive substrings)."""
        lowered = [name.lower() for name in names]
        return torch.tensor([any(w.lower() in name for name in lowered) for w in self.words])


def check_neighbour_keys(count: int, weight: float) -> None:
    """The kin settings every method that keeps them shares: a count ≥ 0 and a positive weight (field named)."""
    check_range("neighbour_keys", count, minimum=0, fix="a count of words, e.g. 64, or 0 for none")
    check_range("neighbour_weight", weight, minimum=1e-12, fix="e.g. 1.0")


def kin_moment(bank: WordKeys, keys: Float[torch.Tensor, "n d_mlp"], subjects: Sequence[str], count: int,
               weight: float) -> tuple[Float[torch.Tensor, "d_mlp d_mlp"], list[list[str]]]:
    """MEMIT's preservation term for a batch's kin: for each fact's key, the `count` nearest bank words (words
    inside any of the batch's subjects left out: an edited subject is not kept off its own edit), each kept word
    once, summed as weight / count · Σ kₙkₙᵀ in float64 — every kept key weighs what it weighs in a ROME edit of its
    fact. Also the words kept per fact, nearest first."""
    excluded = bank.inside(sorted(set(subjects)))
    per_fact = [bank.nearest(key, count, excluded) for key in keys]
    rows = sorted({row for rows in per_fact for row in rows})
    kept = bank.keys[rows].double()
    return (weight / count) * kept.T @ kept, [[bank.words[row] for row in rows] for rows in per_fact]


def _bank_key(handle, layer: int, limit: int, seed: int) -> str:
    tok = handle.tokenizer
    ident = {"v": BANK_VERSION, "weights": key_weights_hash(handle, layer), "layer": layer, "limit": limit,
             "seed": seed, "frames": PLACE_SENTENCES, "vocab": len(tok), "tokenizer": type(tok).__name__,
             "bos": bool(handle.prepend_bos)}
    return hashlib.sha256(repr(sorted(ident.items())).encode()).hexdigest()[:24]


def _last_token_keys(handle, hook: str, texts: list[str], batch_size: int = 256) -> Float[torch.Tensor, "n d"]:
    """`hook`'s activation at each text's last token (right-padded batches; runs the blocks up to the hook)."""
    layer = int(hook.split(".")[1])
    out = []
    for start in range(0, len(texts), batch_size):
        rows = [handle.to_tokens(text)[0] for text in texts[start:start + batch_size]]
        tokens, lengths = right_padded(handle, rows)
        _, cache = handle.tl.run_with_cache(tokens.to(handle.tl.cfg.device), names_filter=[hook],
                                            stop_at_layer=layer + 1)
        out.append(cache[hook][torch.arange(len(rows)), lengths - 1].float().cpu())
    return torch.cat(out)


_BANKS: dict[str, WordKeys] = {}
"""Cache file → bank read in this process (a sequence of ROME edits reads it once, without listing the vocabulary
again: the file is named by the bank key alone); keyed by the weights, so an edited model never gets a stale bank."""


@torch.no_grad()
def word_keys(handle, layer: int, *, limit: int = 30_000, seed: int = 0, cache: bool = True) -> WordKeys:
    """The bank at `layer` (see the module docstring): from the cache, else read from the model (SmolLM2: ~70 s on
    two threads for 28k words)."""
    path = cache_subdir("stats") / f"L{layer}_wordkeys_{_bank_key(handle, layer, limit, seed)}.safetensors"
    if cache and str(path) in _BANKS and path.is_file():
        return _BANKS[str(path)]
    words = vocabulary_words(handle.tokenizer, limit)
    if not words:
        raise ValueError(f"{handle.name}'s tokenizer has no whole-word tokens marked by {' or '.join(WORD_MARKERS)}; "
                         "set neighbour_keys: 0 for this model.")
    keys = None
    if cache and path.is_file():
        try:
            verify(path, rebuild="a recomputation (automatic)")
            keys = load_tensors(path)["keys"]
        except (CacheIntegrityError, KeyError) as error:
            print(f"word keys: {path.name} is unusable ({error}); recomputing it")
    if keys is None:
        rng = random.Random(seed)
        # the frame cut after the word: a causal model's key there does not depend on what follows
        texts = [frame[:frame.index("{}")] + word for frame, word in
                 ((rng.choice(PLACE_SENTENCES), word) for word in words)]
        keys = _last_token_keys(handle, edit_site(handle, layer).key_hook, texts).half()
        if cache:
            atomic_save_tensors(path, {"keys": keys}, {"model": str(handle.name), "layer": str(layer)})
            seal(path)
    bank = WordKeys(words=words, keys=keys, mean=keys.float().mean(0))
    if cache:
        _BANKS.clear()  # one bank at a time: 28k × 1,536 float16 is 86 MB for SmolLM2
        _BANKS[str(path)] = bank
    return bank


@dataclass(frozen=True)
class PreservingSolver:
    """Solves (C + U Uᵀ) x = b through `base` (C's factor) and Woodbury's identity; U = √(weight/count) Kₙᵀ."""

    base: MetricSolver
    columns: Float[torch.Tensor, "d m"]
    c_inv_u: Float[torch.Tensor, "d m"]
    capacitance: Float[torch.Tensor, "m m"]

    @classmethod
    def build(cls, base: MetricSolver, kept: Float[torch.Tensor, "m d"], weight: float) -> PreservingSolver:
        columns = kept.double().T * (weight / len(kept)) ** 0.5
        c_inv_u = base.solve(columns)
        capacitance = torch.eye(columns.shape[1], dtype=torch.float64) + columns.T @ c_inv_u
        return cls(base, columns, c_inv_u, capacitance)

    def solve(self, rhs: Float[torch.Tensor, "d *n"]) -> Float[torch.Tensor, "d *n"]:
        """(C + U Uᵀ)⁻¹ rhs in float64 = C⁻¹rhs − C⁻¹U (I + UᵀC⁻¹U)⁻¹ UᵀC⁻¹rhs."""
        c_inv = self.base.solve(rhs)
        return c_inv - self.c_inv_u @ torch.linalg.solve(self.capacitance, self.columns.T @ c_inv)
