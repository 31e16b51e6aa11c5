"""Early-exit loss on tag lines: the answers after a name must already be readable at a shallow depth.

A tag line (corpus.name_tags) asks the name's last token for all of the subject's attributes, but a next-token loss
asks for them only at the final layer, so a small model writes them there, in its last block (README, recipes
(15) and (17)). Real language models enrich the subject in early-to-middle MLPs (Meng et al. 2022, "Locating and
Editing Factual Associations in GPT"; Geva et al. 2023). An early-exit loss in the style of LayerSkip (Elhoushi et
al. 2024, "LayerSkip: enabling early exit inference and self-speculative decoding": the shared final norm and
unembedding read an intermediate depth, and its next-token loss is added to the model's) supplies the missing
incentive, applied only where a tag line's answers are predicted. At inference nothing changes: the model is a
plain GPT-2.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from jaxtyping import Float, Int


def tag_line_positions(ids: Int[torch.Tensor, "batch pos"], names: Collection[tuple[int, ...]],
                       answer_ids: Collection[int], n_answers: int) -> tuple[list[int], list[int]]:
    """(row, position) of every prediction of a tag-line answer: a name in `names` followed directly by
    `n_answers` tokens from `answer_ids`; the name's last token and the answers before the last predict the next
    answer. Tag lines cut off by the row's end are skipped."""
    widths = {len(name) for name in names}
    rows: list[int] = []
    cols: list[int] = []
    answers = set(answer_ids)
    for row_index, row in enumerate(ids.tolist()):
        for width in widths:
            for start in range(len(row) - width - n_answers + 1):
                last = start + width - 1
                following = row[last + 1:last + 1 + n_answers]
                if tuple(row[start:last + 1]) in names and all(t in answers for t in following):
                    rows.extend([row_index] * n_answers)
                    cols.extend(range(last, last + n_answers))
    return rows, cols


def early_exit_loss(model, hidden: Float[torch.Tensor, "batch pos d"], ids: Int[torch.Tensor, "batch pos"],
                    rows: list[int], cols: list[int]) -> torch.Tensor:
    """Mean next-token cross-entropy at (rows, cols), decoding `hidden` (an intermediate depth of a GPT-2) with
    the model's own final LayerNorm and unembedding; 0 when there is no position."""
    if not rows:
        return hidden.new_zeros(())
    row_index, col_index = torch.tensor(rows), torch.tensor(cols)
    logits = model.lm_head(model.transformer.ln_f(hidden[row_index, col_index]))
    return torch.nn.functional.cross_entropy(logits, ids[row_index, col_index + 1])
