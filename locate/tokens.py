"""Which token positions of a prompt hold the subject (ROME's `find_token_range`, by character offsets).

kmeng01/rome `experiments/causal_trace.py` finds the subject by decoding token prefixes and matching the subject
string. We use the tokenizer's character offsets instead (exact, no decode round trip), with incremental decoding as
the fallback for tokenizers without offsets. Positions follow the handle's BOS convention: with a BOS prepended,
every position shifts by one, exactly as in `handle.to_tokens(text)`.

A token belongs to the subject when its character span overlaps the subject's span; byte-level BPE tokens carry
their leading space (" Eiffel" spans the space before the subject), and the overlap rule keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.facts import Fact


class SubjectNotFoundError(ValueError):
    """The subject could not be located among the prompt's tokens; the message names the fact."""


@dataclass(frozen=True)
class SubjectTokens:
    """The token ids of a prompt and the [start, end) token range covering its subject."""

    token_ids: list[int]
    """Ids exactly as `handle.to_tokens(text)` gives them (BOS included when the handle prepends one)."""
    start: int
    end: int
    """Exclusive: the last subject token is at `end - 1` (ROME's key position)."""

    @property
    def last(self) -> int:
        """The last subject token's position."""
        return self.end - 1

    @property
    def positions(self) -> range:
        return range(self.start, self.end)


def _char_ends_by_decoding(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Character spans of each token, from decoding growing prefixes (for tokenizers without offsets)."""
    spans, previous = [], 0
    for i in range(len(ids)):
        length = len(tokenizer.decode(ids[: i + 1], clean_up_tokenization_spaces=False))
        spans.append((previous, length))
        previous = length
    return spans


def subject_token_range(handle, text: str, char_span: tuple[int, int], *, name: str = "") -> SubjectTokens:
    """The token positions of `text` (with the handle's BOS convention) overlapping characters [start, end).

    `name` identifies the prompt in error messages (e.g. "fact 12 ('Eiffel Tower')").
    """
    tokenizer = handle.tokenizer
    ids = handle.to_tokens(text)[0].tolist()
    n_special = 1 if handle.prepend_bos else 0
    body = ids[n_special:]
    spans: list[tuple[int, int]] | None = None
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] == body:
            spans = [tuple(span) for span in encoded["offset_mapping"]]
    if spans is None:
        spans = _char_ends_by_decoding(tokenizer, body)
        if len(tokenizer.decode(body, clean_up_tokenization_spaces=False)) != len(text):
            raise SubjectNotFoundError(
                f"{name or repr(text)}: the tokenizer neither gives character offsets matching the model's tokens "
                f"nor decodes back to the prompt, so the subject's tokens cannot be located.")
    lo, hi = char_span
    if not (0 <= lo < hi <= len(text)):
        raise SubjectNotFoundError(f"{name or repr(text)}: subject span {char_span} lies outside the prompt "
                                   f"({len(text)} characters).")
    covering = [i for i, (a, b) in enumerate(spans) if a < hi and b > lo]
    if not covering:
        raise SubjectNotFoundError(f"{name or repr(text)}: no token covers characters {lo}–{hi} "
                                   f"({text[lo:hi]!r}).")
    return SubjectTokens(token_ids=ids, start=covering[0] + n_special, end=covering[-1] + 1 + n_special)


def fact_subject_tokens(handle, fact: Fact) -> SubjectTokens:
    """The subject's token range in `fact.text` (the subject's first occurrence, where the prompt's "{}" is)."""
    text = fact.text
    lo, hi = fact.subject_span
    if text[lo:hi] != fact.subject:
        raise SubjectNotFoundError(f"fact {fact.case_id}: subject {fact.subject!r} not found at the prompt's "
                                   f"'{{}}' in {text!r}.")
    return subject_token_range(handle, text, (lo, hi), name=f"fact {fact.case_id} ({fact.subject!r})")


def text_subject_tokens(handle, text: str, subject: str) -> SubjectTokens:
    """The token range of the first occurrence of `subject` in `text` (for prompts that are not Facts)."""
    lo = text.find(subject)
    if lo < 0 or not subject:
        raise SubjectNotFoundError(f"subject {subject!r} does not occur in {text!r}.")
    return subject_token_range(handle, text, (lo, lo + len(subject)), name=f"{text!r}")
