"""Prompts around a fact for ROME/MEMIT: generated prefix templates, the subject's last token, averaged keys.

Following kmeng01/rome (``rome_main.get_context_templates``, ``repr_tools``) and kmeng01/memit
(``memit_main.get_context_templates``, ``compute_ks``):

- Templates are "{}" plus short texts sampled from the model itself (top-k 5), each ending in ". {}". ROME uses
  10 texts of 5 tokens and 10 of 10 tokens; MEMIT 5 of 10. We sample from the seed words MEMIT uses ("The",
  "Therefore", "Because", "I", "You") for both, which works for any tokenizer (ROME starts from GPT-2's
  <|endoftext|>, which other vocabularies lack). Sampling is seeded with a forked RNG: the same model and seed
  give the same templates, and the global RNG is untouched. Nothing is cached globally — the references'
  module-level template cache is one of the ways their edits leak state.
- A template is filled with the relation prompt, then the subject: "<generated>. {} was born in" → subject.
- The fact is looked up at the subject's last token ("subject_last"); its key is the down-projection input there.
  ROME averages keys over all templates; MEMIT averages within each template group, then over groups (so the
  bare "{}" prompt weighs half), as ``compute_ks`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def context_templates(handle, spec: Sequence[tuple[int, int]], *, seed: int = 0) -> list[list[str]]:
    """Template groups: ``[["{}"], <n texts of length l> for (l, n) in spec]``, sampled from the model.

    `spec` pairs are (total tokens per text including its seed word, number of texts), e.g. ROME's
    ``[(5, 10), (10, 10)]``. Texts are spread evenly over `SEED_WORDS`.
    """
    groups: list[list[str]] = [["{}"]]
    tl = handle.tl
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for length, n_texts in spec:
            words = [SEED_WORDS[i % len(SEED_WORDS)] for i in range(n_texts)]
            starts = [handle.to_tokens(w)[0] for w in words]
            texts = [""] * n_texts
            # one sampling batch per seed-word token length (usually a single batch)
            for size in sorted({len(s) for s in starts}):
                rows = [i for i, s in enumerate(starts) if len(s) == size]
                new = max(length - size + (1 if handle.prepend_bos else 0), 1)
                out = tl.generate(torch.stack([starts[i] for i in rows]), max_new_tokens=new, do_sample=True,
                                  top_k=5, stop_at_eos=False, verbose=False, use_past_kv_cache=True)
                skip = 1 if handle.prepend_bos else 0
                for i, row in zip(rows, out):
                    text = handle.tokenizer.decode(row[skip:].tolist(), skip_special_tokens=True)
                    texts[i] = text.replace("{", " ").replace("}", " ") + ". {}"
            groups.append(texts)
    return groups


def subject_last_index(handle, text: str, subject_end: int, ids: list[int] | None = None) -> int:
    """Index (in ``handle.to_tokens(text)``) of the token that ends at character `subject_end`."""
    ids = handle.to_tokens(text)[0].tolist() if ids is None else ids
    head = handle.to_tokens(text[:subject_end])[0].tolist()
    if ids[: len(head)] == head:
        return len(head) - 1
    # The prefix tokenises differently from the full text (a merge across the subject's end): walk the full ids.
    skip = 1 if handle.prepend_bos else 0
    for i in range(skip, len(ids)):
        if len(handle.tokenizer.decode(ids[skip: i + 1])) >= subject_end:
            return i
    raise ValueError(f"subject end {subject_end} lies beyond the text {text!r}.")


@dataclass(frozen=True)
class LookupBatch:
    """Right-padded prompts with the subject's last-token position of each row."""

    tokens: Int[torch.Tensor, "batch pos"]
    lengths: Int[torch.Tensor, " batch"]
    subject_idx: Int[torch.Tensor, " batch"]


def fill(template: str, prompt: str, subject: str) -> tuple[str, int]:
    """(template ∘ prompt ∘ subject text, character index just after the subject)."""
    relation = template.format(prompt)
    start = relation.index("{}")
    return relation.format(subject), start + len(subject)


def lookup_batch(handle, texts: Sequence[str], subject_ends: Sequence[int],
                 suffix_ids: Sequence[Sequence[int]] | None = None) -> LookupBatch:
    """Tokenise texts (plus optional token suffixes, e.g. a target's first tokens) and find the subject ends."""
    rows, idxs = [], []
    for i, (text, end) in enumerate(zip(texts, subject_ends)):
        ids = handle.to_tokens(text)[0].tolist()
        idxs.append(subject_last_index(handle, text, end, ids))
        rows.append(ids + (list(suffix_ids[i]) if suffix_ids is not None else []))
    tokens, lengths = right_padded(handle, rows)
    return LookupBatch(tokens=tokens, lengths=lengths, subject_idx=torch.tensor(idxs))


def right_padded(handle, rows: Sequence[Sequence[int]]) -> tuple[Int[torch.Tensor, "n t"], Int[torch.Tensor, " n"]]:
    """Token rows padded on the right with the tokenizer's pad id (0 without one), and their lengths."""
    pad = handle.tokenizer.pad_token_id or 0
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.as_tensor(row)
    return tokens, lengths


@torch.no_grad()
def activations_at_subject(handle, hook: str, texts: Sequence[str], subject_ends: Sequence[int],
                           batch_size: int = 64) -> Float[torch.Tensor, "n d"]:
    """The activation of `hook` at each text's subject-last token (runs only the blocks up to the hook)."""
    layer = int(hook.split(".")[1])
    out = []
    for start in range(0, len(texts), batch_size):
        batch = lookup_batch(handle, texts[start:start + batch_size], subject_ends[start:start + batch_size])
        _, cache = handle.tl.run_with_cache(batch.tokens.to(handle.tl.cfg.device), names_filter=[hook],
                                            stop_at_layer=layer + 1)
        acts = cache[hook]
        out.append(acts[torch.arange(len(batch.tokens)), batch.subject_idx.to(acts.device)].float().cpu())
    return torch.cat(out)


def template_keys(handle, hook: str, prompts: Sequence[str], subjects: Sequence[str], templates: Sequence[str], *,
                  batch_size: int = 64) -> Float[torch.Tensor, "n n_templates d"]:
    """Per (prompt, subject): the `hook` activation at the subject's last token in every template."""
    texts, ends = [], []
    for prompt, subject in zip(prompts, subjects):
        for template in templates:
            text, end = fill(template, prompt, subject)
            texts.append(text)
            ends.append(end)
    acts = activations_at_subject(handle, hook, texts, ends, batch_size=batch_size)
    return acts.view(len(prompts), len(templates), -1)


def averaged_keys(handle, hook: str, prompts: Sequence[str], subjects: Sequence[str],
                  groups: Sequence[Sequence[str]], *, group_mean: bool, batch_size: int = 64,
                  ) -> Float[torch.Tensor, "n d"]:
    """Per (prompt, subject): the `hook` activation at the subject's last token averaged over the templates.

    ``group_mean=False`` averages over all templates at once (ROME ``compute_u``); ``True`` averages each group
    first, then the group means (MEMIT ``compute_ks``).
    """
    acts = template_keys(handle, hook, prompts, subjects, [t for group in groups for t in group],
                         batch_size=batch_size)
    if not group_mean:
        return acts.mean(1)
    bounds = torch.tensor([0] + [len(g) for g in groups]).cumsum(0).tolist()
    return torch.stack([acts[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])], 1).mean(1)
