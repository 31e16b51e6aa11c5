"""Logit lens (nostalgebraist 2020): read the residual stream at every depth through the model's own output head.

Depth d < n_layers is the residual entering layer d (``blocks.d.hook_resid_pre``; depth 0 = the embeddings), depth
n_layers is the final residual (``blocks.{n-1}.hook_resid_post``). Each is passed through the final norm
(``ln_final``, normalising each vector by its own statistics) and the unembedding, so the last depth reproduces the
model's output distribution exactly. The audit's logit-lens attacks (Patil, Hase & Bansal 2023) read the same
distributions (`layer_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from obliviate.facts import Fact


def depth_names(n_layers: int) -> list[str]:
    """The hook each depth reads: resid_pre of every layer, then the final resid_post."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + \
        [f"blocks.{n_layers - 1}.hook_resid_post"]


@torch.no_grad()
def layer_logprobs(handle, tokens: Int[torch.Tensor, " pos"],
                   positions: Sequence[int] | None = None) -> Float[torch.Tensor, "depth pos vocab"]:
    """log-softmax of the lens read-out at every depth and the given positions (default: all)."""
    from transformer_lens.utilities import apply_softcap

    model = handle.tl
    names = depth_names(model.cfg.n_layers)
    _, cache = model.run_with_cache(tokens[None].to(model.cfg.device), names_filter=lambda n: n in names)
    stack = torch.stack([cache[n][0] for n in names])  # [depth, pos, d_model]
    if positions is not None:
        stack = stack[:, list(positions)]
    if model.cfg.normalization_type is not None:
        stack = model.ln_final(stack)
    logits = apply_softcap(model.unembed(stack), model.cfg.output_logits_soft_cap)
    return logits.float().log_softmax(-1).cpu()


@dataclass
class LogitLensResult:
    """The target's probability and rank at every depth (and every position)."""

    case_id: int | None
    text: str
    tokens: list[str]
    target: str
    target_token: int
    position: int
    """The position the headline figures read (default the last: where the answer is predicted)."""
    probs: Float[torch.Tensor, " depth"]
    """p(target) per depth at `position`."""
    ranks: Int[torch.Tensor, " depth"]
    """Rank of the target per depth at `position` (0 = top-1)."""
    top_tokens: list[str]
    """The top-1 token per depth at `position`."""
    position_probs: Float[torch.Tensor, "depth pos"]
    """p(target) per depth at every position."""
    depths: list[str]
    """The hook each depth reads."""

    def first_top1_depth(self) -> int | None:
        """The first depth from which the target stays top-1 to the output (None if it never does)."""
        top = (self.ranks == 0).tolist()
        if not top[-1]:
            return None
        depth = len(top) - 1
        while depth > 0 and top[depth - 1]:
            depth -= 1
        return depth


def logit_lens(handle, text: str, target: str, *, position: int = -1, case_id: int | None = None) -> LogitLensResult:
    """Logit lens of `text`, tracking the first token of " " + target."""
    tokens = handle.to_tokens(text)[0]
    target_token = handle.answer_token(target)
    logprobs = layer_logprobs(handle, tokens)  # [depth, pos, vocab]
    position = position % len(tokens)
    at = logprobs[:, position]
    target_lp = at[:, target_token]
    ranks = (at > target_lp[:, None]).sum(-1)
    decode = handle.tokenizer.decode
    return LogitLensResult(
        case_id=case_id, text=text, tokens=[decode([i]) for i in tokens.tolist()], target=target,
        target_token=target_token, position=position, probs=target_lp.exp(), ranks=ranks,
        top_tokens=[decode([int(i)]) for i in at.argmax(-1)], position_probs=logprobs[..., target_token].exp(),
        depths=depth_names(handle.tl.cfg.n_layers))


def logit_lens_fact(handle, fact: Fact, *, target: str | None = None) -> LogitLensResult:
    """Logit lens of a fact's prompt, tracking target_true (or `target`) at the last position."""
    return logit_lens(handle, fact.text, fact.target_true if target is None else target, case_id=fact.case_id)


def logit_lens_facts(handle, facts: Sequence[Fact], *, show_progress: bool = False) -> list[LogitLensResult]:
    from tqdm.auto import tqdm

    return [logit_lens_fact(handle, f) for f in tqdm(facts, desc="logit lens", disable=not show_progress)]
