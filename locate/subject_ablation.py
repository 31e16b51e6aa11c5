"""How much of a fact lives at its subject: make the subject *unknown* there and see what the model still recalls.

Every MLP write at the subject's tokens, in the chosen blocks, is replaced by the mean write the model makes for
names it has never seen (same form, same token offset from the name's end). That is mean ablation with a matched
reference: it removes the subject-specific enrichment the early MLPs add (Meng et al. 2022, "Locating and Editing
Factual Associations in GPT"; Geva et al. 2023, "Dissecting Recall of Factual Associations": attributes are
extracted from the enriched subject) and keeps everything a generic name would carry. Two read-outs:

- **recall at the prompt** — what the model can still answer once the subject is unknown at its own positions:
  the part of the fact looked up elsewhere (e.g. at the prompt's last token from the subject's raw tokens);
- **a probe at the subject's last token** — fitted on other subjects' names, read on these: whether the ablated
  subject still carries the attribute (compare with a model that never learned the facts).

An edit that works at the subject can at best do what this ablation does, so its recall is a floor for such edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from locate.activations import depth_hook_name
from locate.probes import fit_probe
from locate.tokens import fact_subject_tokens, text_subject_tokens
from obliviate.facts import Fact

Writes = dict[tuple[int, int], Float[torch.Tensor, " d_model"]]
"""(block, offset of the token before the subject's end: 1 = its last token) → the mean MLP write there."""


@dataclass(frozen=True)
class SubjectAblation:
    """Recall of the facts before and after their subjects' MLP writes are made those of unknown names."""

    blocks: tuple[int, ...]
    recall_before: float
    recall_ablated: float
    p_true_before: float
    p_true_ablated: float


def _mlp_hook(block: int) -> str:
    return f"blocks.{block}.hook_mlp_out"


def unknown_name_writes(handle, names: Sequence[str], blocks: Sequence[int]) -> Writes:
    """The mean MLP write of `names` (never-seen subjects) per block and per offset from the name's end."""
    if not names:
        raise ValueError("unknown_name_writes needs at least one never-seen name.")
    sums: dict[tuple[int, int], torch.Tensor] = {}
    counts: dict[tuple[int, int], int] = {}
    hooks = {_mlp_hook(b): b for b in blocks}
    for name in names:
        span = text_subject_tokens(handle, name, name)
        with torch.no_grad():
            _, cache = handle.tl.run_with_cache(torch.tensor([span.token_ids]), names_filter=lambda n: n in hooks)
        for hook, block in hooks.items():
            for offset in range(1, span.end - span.start + 1):
                key = (block, offset)
                sums[key] = sums.get(key, 0) + cache[hook][0, span.end - offset].float()
                counts[key] = counts.get(key, 0) + 1
    return {key: total / counts[key] for key, total in sums.items()}


def _ablation_hooks(writes: Writes, blocks: Sequence[int], start: int, end: int) -> list:
    """Hooks that put the unknown names' writes at the subject's tokens [start, end) of a one-row batch."""
    def replace(block: int):
        def hook(act: Float[torch.Tensor, "1 pos d_model"], hook) -> torch.Tensor:
            for position in range(start, end):
                write = writes.get((block, end - position))
                if write is not None:  # a subject longer than every reference name keeps its first tokens
                    act[0, position] = write.to(act.dtype)
            return act
        return hook
    return [(_mlp_hook(b), replace(b)) for b in blocks]


def _answer_probs(handle, facts: Sequence[Fact], writes: Writes | None, blocks: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    top1, p_true = [], []
    for fact in facts:
        span = fact_subject_tokens(handle, fact)
        hooks = _ablation_hooks(writes, blocks, span.start, span.end) if writes is not None else []
        with torch.no_grad():
            logits = handle.tl.run_with_hooks(torch.tensor([span.token_ids]), fwd_hooks=hooks)[0, -1]
        probs = logits.float().softmax(-1)
        answer = handle.answer_token(fact.target_true)
        top1.append(bool(probs.argmax() == answer))
        p_true.append(float(probs[answer]))
    return np.array(top1), np.array(p_true)


def ablate_subjects(handle, facts: Sequence[Fact], unknown_names: Sequence[str], blocks: Sequence[int]
                    ) -> SubjectAblation:
    """Recall of `facts` with the MLP writes at their subjects' tokens, in `blocks`, made unknown names' writes."""
    return ablate_subjects_per_block_set(handle, facts, unknown_names, [blocks])[0]


def ablate_subjects_per_block_set(handle, facts: Sequence[Fact], unknown_names: Sequence[str],
                                  block_sets: Sequence[Sequence[int]]) -> list[SubjectAblation]:
    """`ablate_subjects` for each set of blocks, sharing the unknown names' writes and the unablated recall."""
    every_block = sorted({b for blocks in block_sets for b in blocks})
    writes = unknown_name_writes(handle, unknown_names, every_block) if every_block else {}
    before_top1, before_p = _answer_probs(handle, facts, None, [])
    out = []
    for blocks in block_sets:
        after_top1, after_p = _answer_probs(handle, facts, writes, blocks)
        out.append(SubjectAblation(blocks=tuple(blocks), recall_before=float(before_top1.mean()),
                                   recall_ablated=float(after_top1.mean()), p_true_before=float(before_p.mean()),
                                   p_true_ablated=float(after_p.mean())))
    return out


def name_residuals(handle, names: Sequence[str], depths: Sequence[int], *, writes: Writes | None = None,
                   blocks: Sequence[int] = ()) -> Float[torch.Tensor, "depth n d_model"]:
    """The residual at each depth at each name's last token (the name alone), optionally with its MLP writes in
    `blocks` made unknown names' writes."""
    out = torch.empty(len(depths), len(names), handle.tl.cfg.d_model)
    for i, name in enumerate(names):
        span = text_subject_tokens(handle, name, name)
        hooks = _ablation_hooks(writes, blocks, span.start, span.end) if writes is not None else []
        store: dict[str, torch.Tensor] = {}

        def keep(act, hook):
            store[hook.name] = act[0, span.last].detach().float().clone()

        with torch.no_grad():
            handle.tl.run_with_hooks(torch.tensor([span.token_ids]),
                                     fwd_hooks=hooks + [(depth_hook_name(d), keep) for d in depths])
        for j, d in enumerate(depths):
            out[j, i] = store[depth_hook_name(d)]
    return out


def probe_on_held_out_subjects(train: Float[torch.Tensor, "depth n d_model"], train_labels: Sequence[str],
                               test: Float[torch.Tensor, "depth m d_model"], test_labels: Sequence[str],
                               *, seed: int = 0) -> list[float]:
    """Per depth: accuracy on `test` of a probe fitted on `train` (other subjects' names and their answers)."""
    return [fit_probe(train[d], list(train_labels), seed=seed).accuracy(test[d], np.asarray(test_labels))
            for d in range(train.shape[0])]


def subject_ablation_probe(handle, facts: Sequence[Fact], held_out: set[str], unknown_names: Sequence[str],
                           blocks: Sequence[int], *, ablate: bool = True, seed: int = 0) -> list[float]:
    """Per depth (1..L), mean over relations: a probe fitted at the last token of the names of subjects *not* in
    `held_out`, read on those in it — with their MLP writes in `blocks` made unknown names' writes (`ablate`), or
    as the model writes them."""
    return subject_ablation_probes(handle, facts, held_out, unknown_names, [blocks if ablate else []], seed=seed)[0]


def subject_ablation_probes(handle, facts: Sequence[Fact], held_out: set[str], unknown_names: Sequence[str],
                            block_sets: Sequence[Sequence[int]], *, seed: int = 0) -> list[list[float]]:
    """`subject_ablation_probe` for each set of blocks (an empty set: as written), sharing the training subjects'
    residuals and the unknown names' writes."""
    depths = list(range(1, handle.n_layers + 1))
    subjects = sorted({f.subject for f in facts})
    train_names = [s for s in subjects if s not in held_out]
    test_names = [s for s in subjects if s in held_out]
    if not train_names or not test_names:
        raise ValueError("subject_ablation_probe needs subjects both inside and outside `held_out`.")
    answers: dict[str, dict[str, str]] = {}
    for fact in facts:
        answers.setdefault(fact.relation_id, {})[fact.subject] = fact.target_true
    complete = [by_subject for by_subject in answers.values() if all(s in by_subject for s in subjects)]
    if not complete:
        raise ValueError("no relation holds a fact for every subject; the probe needs one answer per subject.")
    every_block = sorted({b for blocks in block_sets for b in blocks})
    writes = unknown_name_writes(handle, unknown_names, every_block) if every_block else None
    train = name_residuals(handle, train_names, depths)
    out = []
    for blocks in block_sets:
        test = name_residuals(handle, test_names, depths, writes=writes if blocks else None, blocks=blocks)
        per_relation = [probe_on_held_out_subjects(train, [by_subject[s] for s in train_names], test,
                                                   [by_subject[s] for s in test_names], seed=seed)
                        for by_subject in complete]
        out.append(np.mean(np.array(per_relation), axis=0).tolist())
    return out
