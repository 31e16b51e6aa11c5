"""Name knockout: attention masks that make a subject's identity pass through the last token of its name.

In real language models, later tokens read a multi-token subject from its last token (Geva et al. 2023,
"Dissecting Recall of Factual Associations", attention knockout: blocking the last position's attention to the
subject's *last* token destroys recall; blocking the other subject tokens barely matters). Models build a word at
its last token, a habit learned over a whole vocabulary of multi-token words; the world's names are its only
multi-token words, and its subjects are already fixed by their first three syllables, so a world model trained
on text alone reads the syllables wherever it needs them (docs/world-history.md: on world v2 the trace's MLP peak
sat on the surname head).

Training with this mask on a share of rows gives the world the same habit: in a masked row, every position after
a name's last token sees the name only through that token. At inference nothing is masked (the model is a plain
GPT-2); rows trained without the mask keep the model at home with unmasked attention.
"""

from __future__ import annotations

import random
from collections.abc import Collection

import torch
from jaxtyping import Bool, Int


def name_knockout_mask(ids: Int[torch.Tensor, "batch pos"], names: Collection[tuple[int, ...]], share: float,
                       rng: random.Random) -> tuple[Bool[torch.Tensor, "batch 1 pos pos"], int]:
    """A causal attention mask (True = may attend) where, in about `share` of the rows (drawn from `rng`), queries
    after each occurrence of a name in `names` (token-id tuples, all of one length) cannot see the name's tokens
    other than its last. Returns the mask and how many name occurrences were masked."""
    batch, length = ids.shape
    mask = torch.tril(torch.ones(length, length, dtype=torch.bool)).repeat(batch, 1, 1, 1)
    lengths = {len(name) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"names must share one token length, got lengths {sorted(lengths)}.")
    width = lengths.pop() if lengths else 0
    masked = 0
    for row_index, row in enumerate(ids.tolist()):
        if width < 2 or rng.random() >= share:
            continue
        for start in range(len(row) - width + 1):
            if tuple(row[start:start + width]) in names:
                last = start + width - 1
                mask[row_index, 0, last + 1:, start:last] = False
                masked += 1
    return mask, masked
