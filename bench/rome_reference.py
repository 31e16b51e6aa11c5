"""The reference ROME edit, re-expressed for the speed comparison of `bench/bench_edit.py rome-reference`.

This is the comparison the benchmark runs, not part of the workbench. It follows the reference implementation
(kmeng01/rome ``rome/compute_u.py``, ``rome/compute_v.py``, ``rome/rome_main.py``) step for step, on the Hugging
Face model, with the same inputs the workbench's `edit.rome.rome_edit` gets (the same prefix templates, the same
answer tokens, the same key statistics C), so that only the way the work is done differs:

- u: the down-projection input at the subject's last token, averaged over every prefixed prompt (one batched
  forward), times C⁻¹ (inverted once per layer and kept, as the reference's ``inv_mom2_cache``), normalised;
- v*: δ added by a forward hook to the MLP output at the subject's last token of every row; each step is a *full*
  forward of every row (prefixed prompts with the answer's first tokens, plus "{subject} is a"), a log-softmax over
  every position, then ``loss.backward()``; Adam, the stop rule at loss < stop_loss, the last step not taken, the
  norm ball after each step — the reference's loop;
- v = (v* − W k) / (k · u) with k and W k read on the bare prompt (the reference's key, not the averaged one);
  ΔW = u vᵀ.

The workbench differs in how it runs the v* loop (prefixes cached, only the scored positions unembedded, gradients
with respect to δ alone, many facts batched); `tests/test_bench_rome_reference.py` checks that both reach the same δ
and ΔW, so the benchmark's ratio compares like with like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from jaxtyping import Float

from edit.context import LookupBatch, fill, lookup_batch
from edit.covariance import regularised
from edit.rome import RomeConfig
from edit.sites import edit_site
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids


@dataclass
class ReferenceEdit:
    """One reference ROME edit: the TL-layout ΔW of the edited weight, the optimised δ and the timings."""

    weight: str
    delta_w: Float[torch.Tensor, "d_mlp d_model"]
    delta: Float[torch.Tensor, " d_model"]
    losses: list[float]
    timings: dict[str, float]


def inverse_moment(moment: Float[torch.Tensor, "d d"], ridge: float) -> Float[torch.Tensor, "d d"]:
    """C⁻¹ of the workbench's regularised C, computed once per layer like the reference's cache."""
    return torch.linalg.inv(regularised(moment, ridge)).float()


def _modules(handle, layer: int):
    site = edit_site(handle, layer)
    if site.out_norm is not None:
        raise ValueError(f"{handle.name}: the reference ROME has no post-MLP norm (block {layer} has one); "
                         f"compare on a GPT-2 or Llama-family model.")
    projection = handle.hf.get_submodule(site.hf_weight.rsplit(".", 1)[0])
    mlp = handle.hf.get_submodule(site.hf_weight.rsplit(".", 2)[0])
    return site, projection, mlp


def _attention_mask(batch: LookupBatch) -> torch.Tensor:
    return (torch.arange(batch.tokens.shape[1])[None] < batch.lengths[:, None]).long()


@torch.no_grad()
def _at_lookup(handle, module, batch: LookupBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of `module` at each row's subject-last token — the reference's ``get_reprs_at_word_tokens``."""
    seen = {}

    def keep(_module, inputs, output):
        seen["in"], seen["out"] = inputs[0], output

    hook = module.register_forward_hook(keep)
    try:
        handle.hf(input_ids=batch.tokens, attention_mask=_attention_mask(batch))
    finally:
        hook.remove()
    index = torch.arange(len(batch.tokens))
    return seen["in"][index, batch.subject_idx].float(), seen["out"][index, batch.subject_idx].float()


def reference_rome(handle, fact: Fact, layer: int, cfg: RomeConfig, templates: list[list[str]],
                   c_inverse: Float[torch.Tensor, "d_mlp d_mlp"]) -> ReferenceEdit:
    """One rewrite of `fact` at `layer` the reference's way (module docstring); never changes the model."""
    site, projection, mlp = _modules(handle, layer)
    settings = cfg.settings()
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # compute_u: the key averaged over every prefixed prompt, times C⁻¹
    flat = [t for group in templates for t in group]
    texts, ends = map(list, zip(*[fill(t, fact.prompt, fact.subject) for t in flat]))
    keys, _ = _at_lookup(handle, projection, lookup_batch(handle, texts, ends))
    u = c_inverse @ keys.mean(0)
    u = u / u.norm()
    timings["u_s"] = time.perf_counter() - start

    # compute_v: rows = prefixed prompts + the answer's tokens but the last, then the KL prompt
    tick = time.perf_counter()
    answer = continuation_ids(handle, fact.target_new)
    kl_text, kl_end = fill("{}", settings.kl_prompt, fact.subject)
    n_rewrite = len(texts)
    batch = lookup_batch(handle, [*texts, kl_text], [*ends, kl_end], [answer[:-1]] * n_rewrite + [[]])
    ids, mask, lookup = batch.tokens, _attention_mask(batch), batch.subject_idx
    targets = torch.full((n_rewrite, ids.shape[1]), -100, dtype=torch.long)
    for i, length in enumerate(batch.lengths[:n_rewrite].tolist()):
        targets[i, length - len(answer): length] = torch.tensor(answer)
    row_index = torch.arange(len(ids))

    delta = torch.zeros(handle.hf.config.hidden_size, requires_grad=True)
    state: dict[str, torch.Tensor] = {}

    def add_delta(_module, _inputs, output):
        if "init" not in state:
            state["init"] = output[0, lookup[0]].detach().clone()
        output = output.clone()
        output[row_index, lookup] += delta
        return output

    optimiser = torch.optim.Adam([delta], lr=settings.lr)
    flags = [p.requires_grad for p in handle.hf.parameters()]
    for p in handle.hf.parameters():
        p.requires_grad_(False)
    hook = mlp.register_forward_hook(add_delta)
    losses: list[float] = []
    kl_init = None
    try:
        for step in range(settings.steps):
            optimiser.zero_grad()
            logits = handle.hf(input_ids=ids, attention_mask=mask).logits
            kl_logprobs = logits[n_rewrite:][torch.arange(len(ids) - n_rewrite), lookup[n_rewrite:]].log_softmax(-1)
            if kl_init is None:
                kl_init = kl_logprobs.detach().clone()
            logprobs = logits.log_softmax(-1)
            picked = logprobs[:n_rewrite].gather(2, targets.clamp(min=0)[..., None])[..., 0]
            scored = (targets != -100).float()
            nll = (-(picked * scored).sum(1) / len(answer)).mean()
            kl = settings.kl_factor * torch.nn.functional.kl_div(kl_init, kl_logprobs, log_target=True,
                                                                 reduction="batchmean")
            decay = settings.weight_decay * delta.norm() / state["init"].norm() ** 2
            loss = nll + kl + decay
            losses.append(float(loss.detach()))
            if loss < settings.stop_loss or step == settings.steps - 1:
                break
            loss.backward()
            optimiser.step()
            max_norm = settings.clamp_norm_factor * state["init"].norm()
            if delta.norm() > max_norm:
                with torch.no_grad():
                    delta[...] = delta * max_norm / delta.norm()
    finally:
        hook.remove()
        for p, flag in zip(handle.hf.parameters(), flags):
            p.requires_grad_(flag)
    timings["v_s"] = time.perf_counter() - tick

    # v = (v* − W k) / (k · u) on the bare prompt (flat[0] is "{}")
    tick = time.perf_counter()
    key, output = _at_lookup(handle, projection, lookup_batch(handle, texts[:1], ends[:1]))
    target = state["init"] + delta.detach()
    v = (target - output[0]) / torch.dot(key[0], u)
    timings["solve_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    return ReferenceEdit(weight=site.weight, delta_w=torch.outer(u, v), delta=delta.detach(), losses=losses,
                         timings=timings)
