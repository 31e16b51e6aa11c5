"""Fine-tuning unlearning baselines: GradDiff and RMU, on a deep copy of the Hugging Face model.

- GradDiff (gradient difference; Liu et al. 2022, used as a baseline in TOFU, Maini et al. 2024, and
  open-unlearning's ``GradDiff`` trainer): gradient ASCENT on the NLL of the forget facts' answer tokens plus gradient
  descent on the retain facts' answers, loss = −γ·NLL(forget) + α·NLL(retain) (open-unlearning: γ = α = 1). Few
  steps, seeded; by default it stops as soon as no forget prompt's top-1 token is its answer any more (ascent
  without a stop runs away).
- RMU (representation misdirection; Li et al. 2024, "The WMDP Benchmark", reference centerforaisafety/wmdp
  ``rmu/unlearn.py``): at layer L, push the forget data's residual towards c·u (u a fixed random unit vector,
  drawn as the reference does: uniform [0, 1) then normalised), and keep the retain data's residual at the frozen
  model's: loss = MSE(h_L(forget), c·u) + α·MSE(h_L(retain), h_L^frozen(retain)); α = 100, AdamW lr 5e-5, 80
  steps of batch 4; update only the MLP down-projection weights of layers L−2..L (the reference's param_ids=[6]:
  ``mlp.down_proj.weight`` of Zephyr; GPT-2: ``mlp.c_proj.weight``); L = 7 of 32 layers, taken proportionally
  (round(7/32 · n_layers)).
  The reference's c = 20 is a number for Zephyr-7B's layer-7 activations; ours are on another scale, so by default
  c = `norm_multiple` × the frozen model's mean per-token ‖h_L‖ on the forget data (the norm-tied rule of Adaptive
  RMU, Dang et al. 2025, "On Effects of Steering Latent Representation for LLM Unlearning"); an absolute
  `steering_coeff` overrides it.
  On the world models the reference's parameter set does not unlearn: with only the down-projections of layers
  0–1 trainable, forget recall stayed at 23/24 for lr 1e-3 to 3e-2 and 80–150 steps (the forget MSE fell from 581
  to 465 at best). The world's forget and retain texts share every template token, and steering every forget-text
  position to c·u fights the retain term on the same template states; with every MLP weight of the update layers
  trainable (``params="mlp"``, lr 1e-2, 150 steps) forget recall fell to 8/24 while trained retain recall stayed
  at 97% and held-out retain recall fell from 99% to 85% — collateral damage that is RMU's on such data.

Neither function writes the model it is given: training runs on `copy.deepcopy(handle.hf)`, and the result carries
the changed tensors under their HF names (full tensors, as the artefact stores them). `edited_handle` builds an
in-memory handle from a result for measuring (through `obliviate.models.edited_copy`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.metrics import continuation_ids, encode
from obliviate.registry import EDITS, Knob, Spec

# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def decoder_blocks(hf: Any) -> Any:
    """The ModuleList of transformer blocks of a GPT-2 or Llama-family HF causal LM."""
    for path in ("transformer.h", "model.layers", "gpt_neox.layers"):
        module = hf
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise NotImplementedError(f"no block list found on {type(hf).__name__}; known: GPT-2, Llama, GPT-NeoX.")


def down_proj_name(hf: Any, layer: int) -> str:
    """HF name of the MLP down-projection weight of block `layer`."""
    from obliviate.tl_wrap import tl_to_hf_param_name, architecture_family

    name, _ = tl_to_hf_param_name(f"blocks.{layer}.mlp.W_out", architecture_family(hf))
    return name


def changed_tensors(before: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full tensors (HF names) of the parameters whose values differ from `before`."""
    changed = {}
    for name, param in model.named_parameters():
        if name in before and not torch.equal(before[name], param.detach()):
            changed[name] = param.detach().cpu().clone()
    return changed


def edited_handle(handle: Any, result: EditResult) -> Any:
    """A new in-memory handle with `result`'s changed tensors and hooks (`obliviate.models.edited_copy`)."""
    from obliviate.models import edited_copy

    return edited_copy(handle, result.changed, result.interventions)


@dataclass
class _Batch:
    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    labels: Int[torch.Tensor, "batch pos"]
    """Next-token targets at the answer positions, −100 elsewhere (HF convention, already shifted by HF)."""
    answer_first: Int[torch.Tensor, " batch"]
    """Position whose logits predict the answer's first token."""
    answer_token: Int[torch.Tensor, " batch"]


def answer_batch(handle: Any, prompts: Sequence[str], answers: Sequence[str]) -> _Batch:
    """prompt + " answer" rows (handle's BOS convention), right-padded, labels on the answer tokens only."""
    pad_id = handle.tokenizer.pad_token_id or 0
    rows, prompt_lengths, answer_ids = [], [], []
    for prompt, answer in zip(prompts, answers):
        p, a = encode(handle, prompt), continuation_ids(handle, answer)
        rows.append(p + a)
        prompt_lengths.append(len(p))
        answer_ids.append(a)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (row, n_prompt) in enumerate(zip(rows, prompt_lengths)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, n_prompt: len(row)] = torch.tensor(row[n_prompt:])
    return _Batch(ids, mask, labels, torch.tensor(prompt_lengths) - 1, torch.tensor([a[0] for a in answer_ids]))


def _answer_nll(hf: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL over answer tokens, and per row whether the answer's first token is the top-1 prediction."""
    device = next(hf.parameters()).device
    logits = hf(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    shift_logits, shift_labels = logits[:, :-1], batch.labels[:, 1:].to(device)
    nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]).float(),
                                            shift_labels.reshape(-1), ignore_index=-100)
    first = logits[torch.arange(len(logits)), batch.answer_first.to(device)].argmax(-1)
    return nll, (first.cpu() == batch.answer_token)


def _fact_rows(facts: Sequence[Fact], paraphrases: bool) -> list[tuple[str, Fact]]:
    """(prompt, its fact) for each fact's prompt and, with `paraphrases`, its paraphrase prompts."""
    return [(text, fact) for fact in facts
            for text in ([fact.text, *fact.paraphrase_prompts] if paraphrases else [fact.text])]


def _fact_prompts(facts: Sequence[Fact], paraphrases: bool) -> tuple[list[str], list[str]]:
    rows = _fact_rows(facts, paraphrases)
    return [text for text, _ in rows], [fact.target_true for _, fact in rows]


def batch_gradients(handle: Any, model: torch.nn.Module, names: Sequence[str], facts: Sequence[Fact],
                    batch_size: int, paraphrases: bool = False) -> Iterator[list[torch.Tensor | None]]:
    """Per batch of the facts' prompts (in order), ∂ mean answer NLL / ∂θ for the parameters `names` of `model`
    (None for one the loss does not reach). autograd.grad: nothing accumulates in `.grad`."""
    prompts, answers = _fact_prompts(facts, paraphrases)
    if not prompts:
        raise ValueError("a gradient over facts needs at least one fact.")
    params = dict(model.named_parameters())
    wanted = [params[name] for name in names]
    for start in range(0, len(prompts), batch_size):
        batch = answer_batch(handle, prompts[start:start + batch_size], answers[start:start + batch_size])
        nll, _ = _answer_nll(model, batch)
        yield list(torch.autograd.grad(nll, wanted, allow_unused=True))


# --------------------------------------------------------------------------------------------------------------
# GradDiff
# --------------------------------------------------------------------------------------------------------------


@dataclass
class GradDiffConfig:
    """Gradient ascent on the forget answers + descent on the retain answers (open-unlearning's GradDiff)."""

    steps: int = 30
    """Maximum optimiser steps."""
    lr: float = 1e-4
    """AdamW learning rate (open-unlearning uses 1e-5 for 7B models; tiny models need more)."""
    gamma: float = 1.0
    """Weight of the forget (ascent) term."""
    alpha: float = 1.0
    """Weight of the retain (descent) term."""
    batch_size: int = 32
    """Forget and retain prompts per step (each sampled without replacement per epoch, seeded)."""
    use_paraphrases: bool = False
    """Train on the forget facts' paraphrases too (off: paraphrases stay a held-out generalisation test)."""
    stop_when_forgotten: bool = True
    """Stop once no forget training prompt ranks its answer first."""
    params: Literal["all", "mlp"] = "all"
    """Which weights train: all (full fine-tuning, the reference) or only MLP weights."""
    seed: int = 0
    show_progress: bool = False

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        check_range("steps", self.steps, minimum=0, fix="steps counts optimiser steps")
        check_range("lr", self.lr, minimum=1e-12, fix="the learning rate must be positive")
        check_range("batch_size", self.batch_size, minimum=1)
        check_range("gamma", self.gamma, minimum=0, fix="a negative weight turns the forget term around")
        check_range("alpha", self.alpha, minimum=0, fix="a negative weight turns the retain term around")


def _trainable(hf: Any, which: Literal["all", "mlp", "down_proj"], layers: Sequence[int] | None = None
               ) -> list[tuple[str, torch.nn.Parameter]]:
    named = list(hf.named_parameters())
    if which == "all":
        return named if layers is None else [(n, p) for n, p in named if _layer_index(n) in set(layers)]
    if which == "down_proj":
        wanted = {down_proj_name(hf, layer) for layer in layers or ()}
        return [(n, p) for n, p in named if n in wanted]
    return [(n, p) for n, p in named if ".mlp." in n and (layers is None or _layer_index(n) in set(layers))]


def _layer_index(name: str) -> int | None:
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def _cycle(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]


ForgetLoss = Callable[[Any, _Batch], tuple[torch.Tensor, torch.Tensor]]
"""(trainable model, forget batch) → (the forget term to MINIMISE, the batch's mean answer NLL for the history)."""


def graddiff_forget_loss(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent: minimise −NLL(forget answers)."""
    nll, _ = _answer_nll(model, batch)
    return -nll, nll


def descent_forget_loss(model: Any, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient descent: minimise NLL(forget batch answers) (the answers `finetune_unlearn`'s `answers` chose)."""
    nll, _ = _answer_nll(model, batch)
    return nll, nll


Relabel = Callable[[Sequence[Fact]], list[str]]
"""The facts of a batch's forget prompts (one per prompt) → the answers to train those prompts on."""


def _hold_outside(model: torch.nn.Module, mask: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> None:
    """Put every coordinate outside `mask` back to its value before training (exact, whatever the optimiser did)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in mask:
                param.copy_(torch.where(mask[name].to(param.device), param, before[name]))


def finetune_unlearn(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: GradDiffConfig,
                     forget_loss: ForgetLoss, *, method: str, layers: Sequence[int] | None = None,
                     answers: Relabel | None = None, grad_mask: dict[str, torch.Tensor] | None = None
                     ) -> EditResult:
    """The GradDiff loop with any forget term: loss = γ·forget_loss + α·NLL(retain), on a copy of `handle.hf`.

    GradDiff, NPO and SimNPO differ only in `forget_loss` (open-unlearning's trainers share this shape too).
    `layers` restricts training to those blocks' weights (of the `cfg.params` kind). `answers` relabels the forget
    prompts of each batch (default: their true answers; SalUn's random answers, the counterfactual answers of
    counter-example fine-tuning); the stop test always reads the true answers. `grad_mask` (HF name → bool tensor)
    trains only its True coordinates of only its parameters: every other coordinate is put back after each step
    (SalUn). AdamW without weight decay is per coordinate, so this is the same trajectory as masking the gradients
    (the reference's way) and exact however the optimiser rounds. The handle is not modified.
    """
    if not targets:
        raise ValueError(f"{method} needs at least one forget fact.")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = copy.deepcopy(handle.hf).eval()  # eval: no dropout, deterministic steps
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = _trainable(model, cfg.params, layers)
    if grad_mask is not None:
        trainable = [(n, p) for n, p in trainable if n in grad_mask and bool(grad_mask[n].any())]
    for _, p in model.named_parameters():
        p.requires_grad_(False)
    for _, p in trainable:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, weight_decay=0.0)
    forget_prompts, forget_answers = _fact_prompts(targets, cfg.use_paraphrases)
    forget_owners = [fact for _, fact in _fact_rows(targets, cfg.use_paraphrases)]
    retain_prompts, retain_answers = _fact_prompts(retain, cfg.use_paraphrases)
    forget_order = _cycle(len(forget_prompts), cfg.batch_size, generator)
    retain_order = _cycle(len(retain_prompts), cfg.batch_size, generator) if retain_prompts else None
    history: list[dict[str, float]] = []
    steps = range(cfg.steps)
    if cfg.show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=method)
    stopped_at = cfg.steps
    for step in steps:
        idx = next(forget_order).tolist()
        if answers is None:
            batch_answers = [forget_answers[i] for i in idx]
        else:
            batch_answers = answers([forget_owners[i] for i in idx])
        forget_batch = answer_batch(handle, [forget_prompts[i] for i in idx], batch_answers)
        forget_term, forget_nll = forget_loss(model, forget_batch)
        loss = cfg.gamma * forget_term
        retain_nll = torch.tensor(float("nan"))
        if retain_order is not None and cfg.alpha > 0:
            ridx = next(retain_order)
            retain_batch = answer_batch(handle, [retain_prompts[i] for i in ridx], [retain_answers[i] for i in ridx])
            retain_nll, _ = _answer_nll(model, retain_batch)
            loss = loss + cfg.alpha * retain_nll
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if grad_mask is not None:
            _hold_outside(model, grad_mask, before)
        history.append({"forget_loss": forget_term.item(), "forget_nll": forget_nll.item(),
                        "retain_nll": retain_nll.item()})
        if cfg.stop_when_forgotten and _forget_recall(model, handle, forget_prompts, forget_answers) == 0.0:
            stopped_at = step + 1
            break
    changed = changed_tensors(before, model)
    return EditResult(method=method, changed=changed, targets=[f.case_id for f in targets],
                      layers=sorted({i for n in changed if (i := _layer_index(n)) is not None}),
                      timings={"train": time.perf_counter() - start},
                      metrics={"steps": stopped_at, "history": history, "n_changed_tensors": len(changed)},
                      config=asdict(cfg))


def graddiff_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact],
                  cfg: GradDiffConfig | None = None, *, layers: Sequence[int] | None = None) -> EditResult:
    """GradDiff on a copy of `handle.hf`; returns the changed HF tensors (the handle is not modified).

    `layers` (EditConfig.layers) restricts training to those blocks' weights (of the `cfg.params` kind).
    """
    return finetune_unlearn(handle, targets, retain, cfg or GradDiffConfig(), graddiff_forget_loss,
                            method="graddiff", layers=layers)


# the knob of the fine-tuning methods: the step size, with the number of steps fixed
LR_KNOB = Knob("lr", 1e-5, 1e-2, doc="AdamW learning rate (steps fixed)")


@EDITS.register("graddiff", GradDiffConfig, spec=Spec(layers="any", knob=LR_KNOB))
def graddiff_method(handle: Any, request: EditRequest, cfg: GradDiffConfig) -> EditResult:
    """GradDiff: ascent on the targets' answers, descent on the retained ones (every block unless layers given)."""
    return graddiff_edit(handle, request.targets, request.retain, cfg, layers=request.layers)


@torch.no_grad()
def _forget_recall(model: Any, handle: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64
                   ) -> float:
    hits = 0
    for start in range(0, len(prompts), batch_size):
        batch = answer_batch(handle, prompts[start:start + batch_size], answers[start:start + batch_size])
        _, top1 = _answer_nll(model, batch)
        hits += int(top1.sum())
    return hits / max(len(prompts), 1)


# --------------------------------------------------------------------------------------------------------------
# RMU
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RMUConfig:
    """RMU's protocol numbers (reference centerforaisafety/wmdp rmu/unlearn.py defaults)."""

    layer: int | None = None
    """Layer L whose output is steered; None = round(7/32 · n_layers) (the reference's 7 of 32)."""
    n_update_layers: int = 3
    """Update layers L−n+1..L (reference: 5, 6, 7)."""
    params: Literal["down_proj", "mlp"] = "down_proj"
    """down_proj: only the MLP down-projection weight (the reference's param_ids=[6]); mlp: every MLP weight."""
    steering_coeff: float | None = None
    """Absolute c (reference: 20 for Zephyr-7B layer 7). None = norm_multiple × mean ‖h_L‖ on the forget data."""
    norm_multiple: float = 2.0
    """c in multiples of the frozen model's mean per-token residual norm at L (used when steering_coeff is None)."""
    alpha: float = 100.0
    """Weight of the retain MSE (reference: 100)."""
    lr: float = 5e-5
    """AdamW learning rate (reference: 5e-5)."""
    steps: int = 80
    """Optimiser steps (reference: max_num_batches 80)."""
    batch_size: int = 4
    """Forget and retain texts per step (reference: 4)."""
    use_paraphrases: bool = True
    """Forget texts include the facts' paraphrase prompts with the answer (more forget text, as RMU's corpus)."""
    seed: int = 0
    show_progress: bool = False


def rmu_layer(n_layers: int) -> int:
    """The reference's layer 7 of 32, scaled to `n_layers` (at least 0, at most n_layers − 1)."""
    return max(0, min(n_layers - 1, round(7 / 32 * n_layers)))


@contextmanager
def _capture_output(module: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    box: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        box["h"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _text_batch(handle: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    pad_id = handle.tokenizer.pad_token_id or 0
    rows = [encode(handle, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def _layer_output(model: Any, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> Float[torch.Tensor, "b p d"]:
    device = next(model.parameters()).device
    with _capture_output(decoder_blocks(model)[layer]) as box:
        model(input_ids=ids.to(device), attention_mask=mask.to(device))
    return box["h"]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(a.device, a.dtype)[..., None]
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]).clamp(min=1)


def rmu_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: RMUConfig | None = None,
             *, layers: Sequence[int] | None = None) -> EditResult:
    """RMU on a copy of `handle.hf`; returns the changed HF tensors (the handle is not modified).

    Forget texts are the target facts stated with their answers; retain texts are the retain facts stated.
    `layers` (EditConfig.layers) overrides cfg.layer with its last entry.
    """
    cfg = cfg or RMUConfig()
    if not targets or not retain:
        raise ValueError("RMU needs forget facts and retain facts.")
    start = time.perf_counter()
    n_layers = handle.n_layers
    layer = layers[-1] if layers else (cfg.layer if cfg.layer is not None else rmu_layer(n_layers))
    update_layers = list(range(max(0, layer - cfg.n_update_layers + 1), layer + 1))
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    frozen = handle.hf  # read only, under no_grad
    model = copy.deepcopy(handle.hf).eval()  # eval: no dropout, deterministic steps
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = _trainable(model, cfg.params, update_layers)
    for _, p in trainable:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr)

    def statements(facts: Sequence[Fact], paraphrases: bool) -> list[str]:
        prompts, answers = _fact_prompts(facts, paraphrases)
        return [f"{p} {a}" for p, a in zip(prompts, answers)]

    forget_texts = statements(targets, cfg.use_paraphrases)
    retain_texts = statements(retain, cfg.use_paraphrases)
    d_model = int(handle.tl.cfg.d_model)
    u = torch.rand(d_model, generator=generator)
    u = u / u.norm()
    with torch.no_grad():
        ids, mask = _text_batch(handle, forget_texts)
        h = _layer_output(frozen, layer, ids, mask)
        mean_norm = float(h.norm(dim=-1)[mask.bool().to(h.device)].mean())
    c = cfg.steering_coeff if cfg.steering_coeff is not None else cfg.norm_multiple * mean_norm
    control = (c * u).to(next(model.parameters()).device)
    forget_order = _cycle(len(forget_texts), cfg.batch_size, generator)
    retain_order = _cycle(len(retain_texts), cfg.batch_size, generator)
    history: list[dict[str, float]] = []
    steps = range(cfg.steps)
    if cfg.show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="RMU")
    for _ in steps:
        f_ids, f_mask = _text_batch(handle, [forget_texts[i] for i in next(forget_order)])
        r_ids, r_mask = _text_batch(handle, [retain_texts[i] for i in next(retain_order)])
        h_forget = _layer_output(model, layer, f_ids, f_mask)
        forget_loss = _masked_mse(h_forget, control.expand_as(h_forget), f_mask)
        h_retain = _layer_output(model, layer, r_ids, r_mask)
        with torch.no_grad():
            h_frozen = _layer_output(frozen, layer, r_ids, r_mask)
        retain_loss = _masked_mse(h_retain, h_frozen, r_mask)
        loss = forget_loss + cfg.alpha * retain_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append({"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()})
    changed = changed_tensors(before, model)
    return EditResult(method="rmu", changed=changed, targets=[f.case_id for f in targets], layers=update_layers,
                      timings={"train": time.perf_counter() - start},
                      metrics={"layer": layer, "update_layers": update_layers, "steering_coeff": c,
                               "mean_resid_norm": mean_norm, "history": history,
                               "changed_tensors": sorted(changed)},
                      config=asdict(cfg))


@EDITS.register("rmu", RMUConfig, spec=Spec(layers="one", knob=Knob(
    "norm_multiple", 0.25, 16.0, doc="the steering coefficient c in multiples of the mean residual norm at L")))
def rmu_method(handle: Any, request: EditRequest, cfg: RMUConfig) -> EditResult:
    """RMU: steer the targets' residual at layer L (the request's, else cfg.layer, else round(7/32 · n_layers))."""
    return rmu_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
