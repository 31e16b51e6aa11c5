"""The v* / z optimisation shared by ROME and MEMIT: a vector δ added at the subject's last token.

Follows kmeng01/rome ``rome/compute_v.py`` and kmeng01/memit ``memit/compute_z.py``. For each fact, δ is added
to the output of block L at the subject's last token of every prompt (ROME: to the MLP output — the "value";
MEMIT: to the residual stream — z), and optimised with Adam (lr 0.5) for at most 20 steps on

    loss = goal term + kl_factor · KL(p_δ ‖ p_0 on "{subject} is a", at the subject's last token)
           + weight_decay · ‖δ‖ / ‖init‖²,

stopping as soon as loss < 0.05 (or, with ``plateau_tol``, once the goal is met — goal term < ln 2 — and a step
lowers the loss, but by less than that share of itself) and projecting ‖δ‖ ≤ clamp_norm_factor · ‖init‖ after each
step, where `init` is the unedited MLP output (ROME) or residual (MEMIT) there on the bare prompt. Goal terms:

- ``rewrite``: the mean per-token NLL of " target_new" over the prefixed prompts (the references' loss; ROME
  writes one prompt per answer-token prefix, we teacher-force the whole answer in one row — the same mean);
- ``erase`` (default ``erase_mode="suppress"``): mean over prompts of −log(1 − p(" target_true")), p being the
  probability of the whole answer (product over its tokens): it falls to 0 as the answer becomes improbable and
  does not reward any particular replacement; the KL term keeps the rest of what the model says about the subject;
- ``erase`` with ``erase_mode="neutral"``: a rewrite towards a fixed neutral answer (e.g. "unknown").

Implementation notes. Every family edited here has sequential blocks, so adding δ to the MLP output equals adding
it to the output of the whole block. Where the block normalises the MLP output before the residual adds it (Gemma's
post-feedforward norm, `EditSite.out_norm`), ROME's δ lives in the down-projection's own output and the block
output moves by norm(own + δ) − norm(own) at each row (`edit.sites.post_norm_shift`), so the rank-one update that
writes δ reproduces what was optimised. Nothing before the subject's last token depends on δ, so those prefixes run
once and each step runs only the rest of each row on their cached keys/values (`_PrefixCachedRunner`, on the HF
model; `_TLRunner` is the plain TransformerLens path), and the unembedding only at the scored positions.
With ``compute_dtype="bfloat16"`` those runs (forward and backward) use a bfloat16 copy of the HF model with eager
attention on the CPU, while δ, the unembedding, the log-softmax and the loss stay in float32 (`low_precision_copy`):
the references run in the model's own dtype, float32 for their GPT-2 XL figures, which is the default here.
Gradients are taken with ``torch.autograd.grad`` with respect to δ alone, so no weight gradients are computed or
left behind. Many facts are optimised at once with one δ per fact;
Adam is element-wise and each fact has its own stopping step and norm ball, so this equals optimising them one by
one (the reference's loop), only batched.

``tie_subjects`` (MEMIT family) gives the facts of one subject one shared δ, optimised on the mean of their losses.
MEMIT writes one value per key, and the key is the subject's: facts of one subject with a δ each become one key with
several residuals, which the least-squares solve can only average — erasing all six facts of a world subject in one
batch so wrote a mean of six suppressions and damaged other subjects as much as the edited ones (README, world
recipe (19)). The references never meet this: CounterFact edits one fact per subject.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from jaxtyping import Float, Int

from edit.context import fill, lookup_batch
from edit.sites import EditSite, post_norm_shift, projection_output
from obliviate.config.loader import check_choices, check_range
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids

Goal = Literal["rewrite", "erase"]
EraseMode = Literal["suppress", "neutral"]
ComputeDtype = Literal["float32", "bfloat16"]
GOAL_MET = math.log(2)
"""The plateau rule waits for a goal term below ln 2: the answer more likely than not per token (rewrite, neutral) or
the true answer less likely than not (suppress: −log(1 − p) < ln 2 ⇔ p < ½, on average over the prompts). A loss
that levels off above it is an optimisation that has not taken hold yet, not one that is done."""


@dataclass
class ValueOptConfig:
    """The optimisation's settings that ROME's and the MEMIT family's configs share (the references' ``v_*``
    hparams; defaults: ROME's GPT-2 XL values); `settings()` hands them to `optimise_values`."""

    lr: float = 0.5
    """Adam learning rate of δ (v_lr)."""
    steps: int = 20
    """Maximum optimisation steps per fact (v_num_grad_steps)."""
    kl_factor: float = 0.0625
    """Weight of KL(edited ‖ unedited) on "{subject} is a" (kl_factor)."""
    weight_decay: float = 0.5
    """Weight of ‖δ‖ / ‖init‖² (v_weight_decay); init is the unedited vector δ is added to: ROME's MLP output, MEMIT's
    residual at the last edited block."""
    clamp_norm_factor: float = 4.0
    """‖δ‖ is kept ≤ this × ‖init‖ (clamp_norm_factor)."""
    stop_loss: float = 0.05
    """A fact's optimisation stops once its loss is below this."""
    plateau_tol: float | None = None
    """Also stop once the goal is met (its term below ln 2: the new answer more likely than not) and a step lowers
    the loss, but by less than this share of itself (e.g. 0.01; a step that raises it, Adam overshooting, does not
    stop); None (the reference) runs until `stop_loss` or `steps`. The reference's stop_loss is reached only where
    ‖δ‖ stays small against ‖init‖ (its decay term alone is 0.5‖δ‖/‖init‖²): on SmolLM2 at layer 6 ROME's loss
    levels off near 0.1 from about step 8. Without the goal condition it stopped one untuned SmolLM2 rewrite after
    2 steps, before the optimisation took hold (README, "ROME against the reference"). Measured on ROME only."""
    erase_mode: EraseMode = "suppress"
    """For goal='erase': 'suppress' (minimise p(true answer), the default) or 'neutral' (rewrite to
    `neutral_target`)."""
    neutral_target: str = "unknown"
    """The answer an erase with erase_mode='neutral' writes in (choose one the tokenizer knows)."""
    compute_dtype: ComputeDtype = "float32"
    """The loop's forward and backward through the blocks: 'float32' (the references' numerics) or 'bfloat16' (a
    bfloat16 copy of the HF model, eager attention on the CPU; δ, logits and loss stay float32; `low_precision_copy`).
    On SmolLM2 (2 CPU threads with AVX-512 BF16) a ROME edit took 8.2–9.0 s against float32's 11.5–14.9 s, at the
    same CounterFact figures (within a point) on the three fact sets (README, "ROME against the reference"); a CPU
    without native bfloat16 may be slower. MEMIT's and AlphaEdit's README figures are float32. Needs the HF model
    (every embedded model has one)."""

    def validate(self) -> None:
        """Checked when a run config is loaded (the key named), and again when the edit runs."""
        check_choices(self)
        check_range("plateau_tol", self.plateau_tol, minimum=1e-12, below=1,
                    fix="a share of the loss, e.g. 0.01, or null to run until stop_loss / steps")

    def settings(self, **internal) -> ValueOptSettings:
        """These settings (validated) with `internal` ones (ValueOptSettings' own fields) for `optimise_values`."""
        self.validate()
        return ValueOptSettings(**{f.name: getattr(self, f.name) for f in fields(ValueOptConfig)}, **internal)


@dataclass
class ValueOptSettings(ValueOptConfig):
    """What `optimise_values` runs with: a config's `ValueOptConfig` plus what only code sets."""

    kl_prompt: str = "{} is a"
    facts_per_batch: int = 16
    prefix_cache: bool = True
    tie_subjects: bool = False


@dataclass
class OptimisedValues:
    """δ per fact, with the unedited vector it is added to and the loss at every step."""

    delta: Float[torch.Tensor, "n d_model"]
    init: Float[torch.Tensor, "n d_model"]
    """Unedited MLP output (ROME; the down-projection's own output behind a post-MLP norm) / residual (MEMIT) at the
    subject's last token of the bare prompt."""
    losses: list[list[float]] = field(default_factory=list)
    goal_prob: list[float] = field(default_factory=list)
    """Final mean probability of the goal's answer (target for rewrite; true answer for erase)."""

    @property
    def target(self) -> Float[torch.Tensor, "n d_model"]:
        return self.init + self.delta


def low_precision_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `model` whose parameters are cast to `dtype` (frozen; tied weights stay tied; buffers such as
    rotary frequencies keep theirs), with eager attention on the CPU — its fused bfloat16 attention's backward costs
    about ten times its forward there (README, "ROME against the reference"). `model` itself is not touched."""
    memo = {id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=False) for p in model.parameters()}
    clone = copy.deepcopy(model, memo)
    if next(model.parameters()).device.type == "cpu" and hasattr(clone, "set_attn_implementation"):
        clone.set_attn_implementation("eager")
    return clone


def goal_answer(fact: Fact, goal: Goal, settings: ValueOptSettings) -> tuple[str, bool]:
    """(answer text, maximise?) for the goal: the new target, the neutral target, or the true one to suppress."""
    if goal == "rewrite":
        return fact.target_new, True
    if goal != "erase":
        raise ValueError(f"goal {goal!r}: choose 'rewrite' or 'erase'.")
    check_choices(settings)
    if settings.erase_mode == "neutral":
        return settings.neutral_target, True
    return fact.target_true, False


def optimise_values(handle, facts: Sequence[Fact], site: EditSite, templates: Sequence[str], *,
                    at: Literal["mlp_out", "resid"], goal: Goal, settings: ValueOptSettings,
                    show_progress: bool = False) -> OptimisedValues:
    """Optimise δ for each fact at `site` (see the module docstring); facts are batched, results are per fact
    (with ``settings.tie_subjects``, facts of one subject share theirs and are never split across batches)."""
    order, chunks = _chunks(facts, settings)
    deltas, inits, losses, probs = [], [], [], []
    model = _runner_model(handle, settings)
    if show_progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"optimise {'v*' if at == 'mlp_out' else 'z'} @ layer {site.layer}")
    for chunk in chunks:
        subjects = list(dict.fromkeys(facts[i].subject for i in chunk))
        tie = [subjects.index(facts[i].subject) for i in chunk] if settings.tie_subjects else None
        out = _optimise_chunk(handle, [facts[i] for i in chunk], site, templates, at=at, goal=goal,
                              settings=settings, tie=tie, model=model)
        deltas.append(out.delta)
        inits.append(out.init)
        losses += out.losses
        probs += out.goal_prob
    back = torch.tensor(order).argsort()  # chunks follow `order`; results go back to the facts' order
    return OptimisedValues(delta=torch.cat(deltas)[back], init=torch.cat(inits)[back],
                           losses=[losses[i] for i in back.tolist()], goal_prob=[probs[i] for i in back.tolist()])


def _runner_model(handle, settings: ValueOptSettings) -> torch.nn.Module | None:
    """The HF model the prefix-cached runner runs (a low-precision copy where asked); None: the TL runner."""
    check_choices(settings)
    hf = getattr(handle, "hf", None)
    if hf is None or not settings.prefix_cache:
        if settings.compute_dtype != "float32":
            raise ValueError(f"compute_dtype={settings.compute_dtype!r} runs on the Hugging Face model with the "
                             "prefix cache; this handle has no HF model or prefix_cache is off — use 'float32'.")
        return None
    if settings.compute_dtype == "float32":
        return hf
    return low_precision_copy(hf, getattr(torch, settings.compute_dtype))


def _chunks(facts: Sequence[Fact], settings: ValueOptSettings) -> tuple[list[int], list[list[int]]]:
    """(fact order, batches of fact indices): in the given order, `facts_per_batch` at a time; with tie_subjects,
    grouped by subject (first appearance) and cut only between subjects."""
    size = max(settings.facts_per_batch, 1)
    if not settings.tie_subjects:
        order = list(range(len(facts)))
        return order, [order[i:i + size] for i in range(0, len(order), size)]
    by_subject: dict[str, list[int]] = {}
    for i, fact in enumerate(facts):
        by_subject.setdefault(fact.subject, []).append(i)
    chunks: list[list[int]] = []
    for group in by_subject.values():
        if chunks and len(chunks[-1]) + len(group) <= size:
            chunks[-1] += group
        else:
            chunks.append(list(group))
    return [i for chunk in chunks for i in chunk], chunks


def _optimise_chunk(handle, facts: Sequence[Fact], site: EditSite, templates: Sequence[str], *,
                    at: str, goal: Goal, settings: ValueOptSettings, tie: list[int] | None = None,
                    model: torch.nn.Module | None = None) -> OptimisedValues:
    """δ for the facts of one batch; `tie[f]` is the index of fact f's shared δ (default: one δ per fact). `model`:
    the HF model the prefix-cached runner runs (`_runner_model`); None runs the TL runner."""
    tl = handle.tl
    device = tl.cfg.device
    n_facts, n_templates = len(facts), len(templates)

    # Rows: for each fact, one per template (prompt + answer tokens but the last), then its KL prompt.
    texts, ends, suffixes, answer_ids, maximise = [], [], [], [], []
    for fact in facts:
        answer, up = goal_answer(fact, goal, settings)
        ids = continuation_ids(handle, answer)
        if not ids:
            raise ValueError(f"fact {fact.case_id}: answer {answer!r} tokenises to nothing.")
        answer_ids.append(ids)
        maximise.append(up)
        for template in templates:
            text, end = fill(template, fact.prompt, fact.subject)
            texts.append(text)
            ends.append(end)
            suffixes.append(ids[:-1])
    for fact in facts:
        text, end = fill("{}", settings.kl_prompt, fact.subject)
        texts.append(text)
        ends.append(end)
        suffixes.append([])
    batch = lookup_batch(handle, texts, ends, suffixes)
    tokens = batch.tokens.to(device)
    n_rows = len(texts)
    row_fact = torch.cat([torch.arange(n_facts).repeat_interleave(n_templates), torch.arange(n_facts)]).to(device)
    subject_idx = batch.subject_idx.to(device)

    # Scored positions: each answer token of each template row, predicted from the position before it.
    pos_row, pos_idx, pos_tok, pos_group = [], [], [], []
    for f in range(n_facts):
        ids = answer_ids[f]
        for t in range(n_templates):
            row = f * n_templates + t
            first = int(batch.lengths[row]) - len(ids)  # position predicting the first answer token
            for j, tok in enumerate(ids):
                pos_row.append(row)
                pos_idx.append(first + j)
                pos_tok.append(tok)
                pos_group.append(row)
    pos_row_t = torch.tensor(pos_row, device=device)
    pos_idx_t = torch.tensor(pos_idx, device=device)
    pos_tok_t = torch.tensor(pos_tok, device=device)
    pos_group_t = torch.tensor(pos_group, device=device)
    kl_rows = torch.arange(n_facts * n_templates, n_rows, device=device)
    maximise_t = torch.tensor(maximise, device=device)
    answer_len = torch.tensor([len(a) for a in answer_ids], device=device, dtype=torch.float32)

    # The unedited vector δ is added to (and measured against), on the bare prompt of each fact.
    first_rows = torch.arange(n_facts) * n_templates
    through_norm = at == "mlp_out" and site.out_norm is not None
    with torch.no_grad():
        if through_norm:  # δ lives in the down-projection's own output, before the post-MLP norm (edit/sites.py)
            _, cache = tl.run_with_cache(tokens, names_filter=[site.key_hook, site.out_hook],
                                         stop_at_layer=site.layer + 1)
            rows = torch.arange(n_rows, device=device)
            own = projection_output(tl, site, cache[site.key_hook][rows, subject_idx]).float()
            normed = cache[site.out_hook][rows, subject_idx].float()
            init = own[first_rows.to(device)].clone()
        else:
            hook = site.out_hook if at == "mlp_out" else site.resid_hook
            _, cache = tl.run_with_cache(tokens[first_rows], names_filter=[hook], stop_at_layer=site.layer + 1)
            init = cache[hook][torch.arange(n_facts), subject_idx[first_rows.to(device)]].float().clone()
        del cache
    runner = (_PrefixCachedRunner(handle, site.layer, batch, model=model) if model is not None
              else _TLRunner(handle, site.layer, batch))
    pos_idx_t = pos_idx_t - subject_idx[pos_row_t]  # suffix coordinates: the subject's last token is 0

    def block_shift(delta: torch.Tensor) -> torch.Tensor:
        """What each row's block output receives at the subject's last token."""
        per_row = delta[row_fact]
        return post_norm_shift(tl, site, per_row, own, normed) if through_norm else per_row

    unembed_weight, unembed_bias = runner.unembedding()

    def forward(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob of each scored answer token, and the full log-distribution at each KL row."""
        hidden = runner(block_shift(delta))
        read = torch.cat([hidden[pos_row_t, pos_idx_t], hidden[kl_rows, 0]])
        return output_logprobs(read, unembed_weight, unembed_bias, pos_tok_t)

    owner = torch.tensor(tie if tie is not None else range(n_facts), device=device)  # fact → its δ
    n_deltas = int(owner.max()) + 1
    shared = torch.zeros(n_deltas, init.shape[-1], device=device, requires_grad=True)
    optimiser = torch.optim.Adam([shared], lr=settings.lr)
    kl_init: torch.Tensor | None = None  # the unedited distribution: the first step's, where δ is still 0
    init_norm = init.norm(dim=-1)
    sharing = torch.zeros(n_deltas, device=device).index_add(0, owner, torch.ones(n_facts, device=device))
    # a shared δ stays inside every one of its facts' norm balls
    max_norm = torch.full((n_deltas,), torch.inf, device=device).scatter_reduce(
        0, owner, settings.clamp_norm_factor * init_norm, reduce="amin")

    def per_delta(per_fact: torch.Tensor) -> torch.Tensor:
        """Mean over each δ's facts (one fact per δ unless subjects are tied)."""
        return torch.zeros(n_deltas, device=device).index_add(0, owner, per_fact) / sharing

    done = torch.zeros(n_deltas, dtype=torch.bool, device=device)
    previous = torch.full((n_deltas,), torch.inf, device=device)  # each δ's loss one step earlier
    history: list[list[float]] = [[] for _ in range(n_facts)]
    goal_prob = torch.zeros(n_facts, device=device)

    for step in range(settings.steps):
        delta = shared[owner]
        token_lp, kl_lp = forward(delta)
        if kl_init is None:
            kl_init = kl_lp.detach()
        # Per row: sum of answer-token log-probs; per fact: mean over its template rows.
        row_sum = torch.zeros(n_facts * n_templates, device=device).index_add(0, pos_group_t, token_lp)
        row_sum = row_sum.view(n_facts, n_templates)
        nll = -(row_sum / answer_len[:, None]).mean(1)
        seq_lp = row_sum.clamp(max=-1e-6)
        suppress = -torch.log(-torch.expm1(seq_lp)).mean(1)
        goal_loss = torch.where(maximise_t, nll, suppress)
        kl = (kl_lp.exp() * (kl_lp - kl_init)).sum(-1)  # KL(p_δ ‖ p_0) per fact, as the references' kl_div
        decay = delta.norm(dim=-1) / init_norm**2
        loss = goal_loss + settings.kl_factor * kl + settings.weight_decay * decay
        loss = per_delta(loss)
        with torch.no_grad():
            goal_prob = torch.where(done[owner], goal_prob, row_sum.exp().mean(1))
            for f in torch.nonzero(~done[owner]).flatten().tolist():
                history[f].append(float(loss[owner[f]]))
            done |= loss.detach() < settings.stop_loss
            if settings.plateau_tol is not None:  # lowered, but by less than the share (a rise is Adam overshooting)
                gain = previous - loss.detach()
                met = per_delta(goal_loss.detach()) < GOAL_MET
                done |= met & (gain >= 0) & (gain < settings.plateau_tol * previous)
                previous = loss.detach()
        if bool(done.all()) or step == settings.steps - 1:
            break
        (grad,) = torch.autograd.grad(loss[~done].sum(), [shared])
        frozen = shared.detach().clone()
        shared.grad = grad
        optimiser.step()
        with torch.no_grad():
            shared[done] = frozen[done]  # finished facts keep the δ that met the stopping loss
            norms = shared.norm(dim=-1)
            over = norms > max_norm
            shared[over] *= (max_norm[over] / norms[over])[:, None]
    return OptimisedValues(delta=shared[owner].detach().cpu(), init=init.cpu(), losses=history,
                           goal_prob=goal_prob.detach().cpu().tolist())


def output_logprobs(hidden: Float[torch.Tensor, "n d_model"], weight: Float[torch.Tensor, "vocab d_model"],
                    bias: Float[torch.Tensor, " vocab"] | None, tokens: Int[torch.Tensor, " n_scored"]
                    ) -> tuple[Float[torch.Tensor, " n_scored"], Float[torch.Tensor, "n_full vocab"]]:
    """One pass of the output layer over every row the v* loss reads: for the first ``len(tokens)`` rows, log
    softmax(hidden · weightᵀ + bias)[token]; for the rest, the whole log-distribution (the KL rows). In float32.

    What a log-softmax and a gather give, with a backward that makes one pass over the vocabulary instead of three
    full-size buffers, and one matmul with the output weight each way for all rows: the weight is the vocabulary's
    size (SmolLM2: 113 MB), so a separate product for one KL row costs a quarter of the scored rows' (`_OutputLayer`).
    Differentiable with respect to `hidden` only: the output layer is a constant here (the v* loop takes gradients
    with respect to δ alone)."""
    return _OutputLayer.apply(hidden, weight.detach(), None if bias is None else bias.detach(), tokens)


class _OutputLayer(torch.autograd.Function):
    """The log-prob of one token for the scored rows and the log-softmax of the others. The gradient of log pₜ with
    respect to the logits is onehot(t) − p, and of a full log-softmax row g − p·Σg, so the backward rebuilds p from
    the saved logits and their log-sum-exp in place and multiplies all rows into the weight at once (the weight and
    bias take no gradient); autograd's log_softmax → gather chain would zero-fill, scatter and copy rows the size of
    the vocabulary at every step of the v* loop."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens):
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
        lse = logits.logsumexp(-1)
        ctx.save_for_backward(weight, logits, lse, tokens)
        n = len(tokens)
        return logits[:n].gather(-1, tokens[:, None])[:, 0] - lse[:n], logits[n:] - lse[n:, None]

    @staticmethod
    def backward(ctx, grad_token, grad_full):
        weight, logits, lse, tokens = ctx.saved_tensors
        n = len(tokens)
        # autograd passes zeros for an output the loss does not read (materialised grads, the default)
        grad_logits = logits.sub(lse[:, None]).exp_()  # p, row by row
        # d/d logits of Σ gᵢ log pᵢ[tᵢ] = gᵢ (onehot(tᵢ) − pᵢ)
        grad_logits[:n].mul_(-grad_token[:, None])
        grad_logits[:n].scatter_add_(1, tokens[:, None], grad_token[:, None].to(grad_logits.dtype))
        # d/d logits of Σ G·log p = G − p ΣG
        grad_logits[n:].mul_(-grad_full.sum(-1, keepdim=True)).add_(grad_full)
        return grad_logits.to(weight.dtype) @ weight, None, None, None


class _PrefixCachedRunner:
    """Runs the prompts with δ added to block L's output at the subject's last token, recomputing only what δ
    can change.

    Every position before the subject's last token is independent of δ, so the rows are split there: the
    prefixes run once (left-padded to a common length, with their real position ids) and their keys/values are
    cached; each step runs only the suffixes (from the subject's last token on) on top of that cache, on the
    Hugging Face model (whose cache, masks and position ids handle ragged prefixes). Blocks 0..L on the suffixes
    are independent of δ too: they run once, and each step reuses their outputs. This removes about two thirds of
    the work per step for the references' prompts; `tests/test_rome.py` checks that the log-probs equal an
    uncached TransformerLens forward.
    """

    def __init__(self, handle, layer: int, batch, model: torch.nn.Module | None = None):
        from edit.sites import hf_blocks

        hf = model if model is not None else handle.hf  # a low-precision copy runs the blocks (`low_precision_copy`)
        self.base = hf.base_model
        self._unembed = handle.hf.get_output_embeddings()  # the original's: logits in its dtype
        self.block = hf_blocks(hf)[layer]
        device = next(hf.parameters()).device
        pad = handle.tokenizer.pad_token_id or 0
        starts = batch.subject_idx.tolist()
        lengths = batch.lengths.tolist()
        n_rows = len(starts)
        self.prefix_len = max(starts)
        width = max(n - s for n, s in zip(lengths, starts))
        pre_ids = torch.full((n_rows, self.prefix_len), pad, dtype=torch.long)
        pre_mask = torch.zeros(n_rows, self.prefix_len, dtype=torch.long)
        pre_pos = torch.zeros(n_rows, self.prefix_len, dtype=torch.long)
        suf_ids = torch.full((n_rows, width), pad, dtype=torch.long)
        suf_mask = torch.zeros(n_rows, width, dtype=torch.long)
        for r, (n, s) in enumerate(zip(lengths, starts)):
            row = batch.tokens[r]
            if s:
                pre_ids[r, self.prefix_len - s:] = row[:s]
                pre_mask[r, self.prefix_len - s:] = 1
                pre_pos[r, self.prefix_len - s:] = torch.arange(s)
            suf_ids[r, : n - s] = row[s:n]
            suf_mask[r, : n - s] = 1
        self.suf_ids = suf_ids.to(device)
        self.suf_pos = (torch.tensor(starts)[:, None] + torch.arange(width)[None]).to(device)
        self.mask = torch.cat([pre_mask, suf_mask], 1).to(device)
        self.cache = None
        if self.prefix_len:
            with torch.no_grad():
                out = self.base(input_ids=pre_ids.to(device), attention_mask=pre_mask.to(device),
                                position_ids=pre_pos.to(device), use_cache=True)
            self.cache = out.cache
            # every layer's state after the prefix (tensors and counters: a sliding-window layer also keeps its
            # cumulative length), put back after each step
            self._prefix_state = [dict(vars(layer)) for layer in self.cache.layers]
        self._shift: torch.Tensor | None = None
        # Blocks 0..L on the suffixes do not depend on δ either: run them once and let each step reuse what their
        # forward returned (hooks still run around it; the attention caches they would extend are put back after
        # each step anyway). The stub is an instance attribute present only during a call of this runner: nothing
        # else may run these HF blocks meanwhile (nothing in the project does it from another thread).
        self.early = list(hf_blocks(hf)[: layer + 1])
        self._early_out: list = [None] * len(self.early)
        for i, block in enumerate(self.early):
            block.forward = self._recording(block, i)  # an instance attribute: nn.Module calls it instead
        try:
            with torch.no_grad():
                self._run()
        finally:
            for block in self.early:
                del block.forward

    def _recording(self, block, i: int):
        def forward(*args, **kwargs):
            self._early_out[i] = type(block).forward(block, *args, **kwargs)
            return self._early_out[i]
        return forward

    def _run(self):
        try:
            return self.base(input_ids=self.suf_ids, attention_mask=self.mask, position_ids=self.suf_pos,
                             cache=self.cache, use_cache=self.cache is not None)
        finally:
            if self.cache is not None:
                # put the prefix state back: cropping would keep views of this step's graph alive
                for layer, state in zip(self.cache.layers, self._prefix_state):
                    vars(layer).clear()
                    vars(layer).update(state)

    def _add_shift(self, module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        shift = self._shift.to(hidden.dtype)
        hidden = torch.cat([hidden[:, :1] + shift[:, None], hidden[:, 1:]], 1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def unembedding(self) -> tuple[Float[torch.Tensor, "vocab d_model"], Float[torch.Tensor, " vocab"] | None]:
        """The output embedding's weight and bias (None where it has none)."""
        return self._unembed.weight, self._unembed.bias

    def __call__(self, shift: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row suffix d_model"]:
        """Final hidden states (after the last norm) of the suffixes, with each row's shift added to block L's
        output at the subject's last token; in the unembedding's dtype."""
        self._shift = shift
        hook = self.block.register_forward_hook(self._add_shift)
        for block, output in zip(self.early, self._early_out):
            block.forward = _returns(output)
        try:
            out = self._run()
        finally:
            hook.remove()
            for block in self.early:
                del block.forward
            self._shift = None
        return out.last_hidden_state.to(self._unembed.weight.dtype)


def _returns(output):
    """A forward that ignores its inputs and returns `output` (a block whose result is already known)."""

    def forward(*args, **kwargs):
        return output

    return forward


class _TLRunner:
    """The same computation on the TransformerLens model alone (handles without an HF model): the blocks up to L
    run once, each step runs blocks L+1.. on whole rows. Slower than `_PrefixCachedRunner`; the reference path."""

    def __init__(self, handle, layer: int, batch):
        self.tl = handle.tl
        self.layer = layer
        device = self.tl.cfg.device
        self.tokens = batch.tokens.to(device)
        self.starts = batch.subject_idx.to(device)
        with torch.no_grad():
            self.base = self.tl(self.tokens, stop_at_layer=layer + 1)
        width = int((batch.lengths - batch.subject_idx).max())
        self.gather = (self.starts[:, None] + torch.arange(width, device=device)[None]).clamp(
            max=self.tokens.shape[1] - 1)

    def __call__(self, row_shift: Float[torch.Tensor, "row d_model"]) -> Float[torch.Tensor, "row suffix d_model"]:
        rows = torch.arange(len(self.tokens), device=self.tokens.device)
        shift = torch.zeros_like(self.base)
        shift[rows, self.starts] = row_shift.to(self.base.dtype)
        resid = self.tl(self.base + shift, start_at_layer=self.layer + 1, stop_at_layer=self.tl.cfg.n_layers)
        suffix = resid[rows[:, None], self.gather]
        return self.tl.ln_final(suffix) if self.tl.cfg.normalization_type is not None else suffix

    def unembedding(self) -> tuple[Float[torch.Tensor, "vocab d_model"], Float[torch.Tensor, " vocab"]]:
        """The unembedding as an output layer: W_U transposed (a view) and b_U."""
        return self.tl.unembed.W_U.T, self.tl.unembed.b_U
