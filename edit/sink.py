"""Prompts whose subject sits on a massive activation, where an edit at the subject's last token cannot reach.

Language models turn a few positions into attention sinks: the first token, and in many models the first
content token and some delimiters, carry a residual an order of magnitude larger than the rest from an early block
on (Sun et al. 2024, "Massive Activations in Large Language Models"; Xiao et al. 2024, "Efficient Streaming
Language Models with Attention Sinks"), and later tokens read what stands there only in the blocks before. When a
fact's subject ends on such a position, ROME / MEMIT, which write at the subject's last token with ‖δ‖ bounded by
a multiple of the unedited MLP output there, shift that huge residual by a few percent and change almost nothing
downstream.

Measured on SmolLM2-135M, "Italy is located in the continent of": ‖residual‖ at block 4 is ≈ 800 on "Italy" as the
first token against 70–100 elsewhere, and ≈ 630 when a BOS token stands before it (the first content token is a
sink too), ≈ 100 in "The country Italy is …"; the MLP output there is ≈ 5. Of its fact file's 391 facts, 21 have
prompts flagged here at block 4 (33 prompts: one-token subjects opening "{} has its capital in the city of", "{} is
located in the continent of", "{} was founded by"); a ROME edit of each of those facts at layer 4 with the shipped
settings (configs/smollm2-rome.yaml) makes the new answer beat the true one on 5 of the 33 flagged prompts against
40 of the same facts' 41 other prompts, and on the six continent facts, whose every prompt is flagged, on none,
while the same edit moves each of the fact's prefixed v* templates (Italy: p(new) 0.56–0.97 against ≤ 0.015 before).
Layers 1–2, where the sink forms, reach some of the six (ES 33 / 67 of 100) at a cost to neighbours' margins; the
untuned and fresh fact files and Gemma-3's (whose BOS token holds the sink) have no flagged prompt.

So the test is what the model does, not where the subject stands: the subject's last token is flagged when its
residual at the edited block is `SINK_RATIO` times the median over the prompt's positions. The edit methods record
such prompts per fact and warn, naming the fact and what reaches it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from edit.context import lookup_batch
from obliviate.facts import Fact

SINK_RATIO = 2.5
"""A position is a sink when its residual norm is this many times the prompt's median: about the geometric middle of
the gap measured on SmolLM2's fact file at block 4, where the 33 flagged subject positions sit at 4.4–9.5× and
every other prompt's subject at ≤ 1.5× (the untuned and fresh files ≤ 1.5×, Gemma-3's at block 5 ≤ 1.6×)."""


class SinkSubjectWarning(UserWarning):
    """A fact to edit has prompts whose subject's last token is a massive-activation position of the model."""


def subject_prompts(fact: Fact) -> tuple[list[str], list[int]]:
    """The fact's own prompt and the paraphrases that name its subject, with the character end of the subject."""
    texts, ends = [fact.text], [fact.subject_span[1]]
    for text in fact.paraphrase_prompts:
        start = text.find(fact.subject)
        if start >= 0:
            texts.append(text)
            ends.append(start + len(fact.subject))
    return texts, ends


@torch.no_grad()
def sink_prompts(handle, facts: Sequence[Fact], layer: int, ratio: float = SINK_RATIO, *,
                 batch_size: int = 64) -> dict[int, list[str]]:
    """Per fact (by case_id, only facts with any): its prompts (`subject_prompts`) in which the residual after block
    `layer` at the subject's last token is at least `ratio` times the median residual norm over that prompt."""
    rows = [(fact.case_id, text, end) for fact in facts for text, end in zip(*subject_prompts(fact))]
    hook = f"blocks.{layer}.hook_resid_post"
    found: dict[int, list[str]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = lookup_batch(handle, [text for _, text, _ in chunk], [end for _, _, end in chunk])
        _, cache = handle.tl.run_with_cache(batch.tokens.to(handle.tl.cfg.device), names_filter=[hook],
                                            stop_at_layer=layer + 1)
        norms = cache[hook].float().norm(dim=-1).cpu()
        for i, (case_id, text, _) in enumerate(chunk):
            own = norms[i, : int(batch.lengths[i])]
            if own[int(batch.subject_idx[i])] >= ratio * own.median():
                found.setdefault(case_id, []).append(text)
    return found


def warn_sink_prompts(handle, facts: Sequence[Fact], layer: int, method: str, shown: int = 5) -> dict[int, list[str]]:
    """`sink_prompts`, with one `SinkSubjectWarning` for the batch naming the first `shown` facts that have any."""
    found = sink_prompts(handle, facts, layer)
    if found:
        named = [f"fact {f.case_id} ({f.subject!r} -> {f.target_new!r}: {found[f.case_id][0]!r}"
                 f"{', ...' if len(found[f.case_id]) > 1 else ''})" for f in facts if f.case_id in found]
        more = f" and {len(named) - shown} more" if len(named) > shown else ""
        warnings.warn(SinkSubjectWarning(
            f"{method}: {'; '.join(named[:shown])}{more}: in these prompts the subject's last token carries a massive "
            f"activation at block {layer} (an attention sink: the first token of the text, or the first after a BOS "
            f"token), and an edit there seldom reaches the answer (SmolLM2: 5 of 33 such prompts). Prompts with "
            f"text before the subject (a sentence, a chat template) do get the edit: judge it on those. The edit's "
            f"record lists them (sink_prompts)."), stacklevel=3)
    return found
