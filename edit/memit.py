"""MEMIT: Mass-Editing Memory in a Transformer (Meng, Sharma, Andonian, Belinkov & Bau, ICLR 2023); reference code
kmeng01/memit ``memit/memit_main.py``, ``compute_z.py``, ``compute_ks.py``.

Many facts are written at once into the down-projections of a contiguous range of blocks R = [l_1 … l_L]:

1. z_i — for each fact, the residual stream after the last block l_L at the subject's last token, optimised like
   ROME's v* (`edit.value_opt`, ``at="resid"``, clamp 0.75 × ‖h‖) over "{}" and 5 generated 10-token prefixes.
2. For each block l in R, in order, with the updates of the earlier blocks in place:
   K = the facts' keys at l (averaged within each template group, then over groups; `edit.context`),
   R = (z − h) / (L − i), where h is the *current* residual at l_L on the bare prompts and L − i the number of
   blocks left including this one (the reference measures h at the last block, after the earlier updates), and
   ΔW_l = (λC_l + K Kᵀ)⁻¹ K Rᵀ in TL layout [d_mlp, d_model], solved in float64.
   C_l = E[k kᵀ] is the per-token mean over a local corpus (`edit.covariance`), so λ (``mom2_update_weight``)
   counts "corpus tokens' worth" of preservation weight against the batch: the reference uses 20 000 for GPT-2 XL
   (d_mlp 6 400) and 15 000 for GPT-J (d_mlp 16 384).

λ scales with d_mlp. For one key k the solve realises the fraction a / (1 + a) of its residual, a = kᵀ(λC)⁻¹k,
and a typical key's Mahalanobis norm kᵀC⁻¹k is about d_mlp, so a ≈ d_mlp / λ: GPT-J's 15 000 realises about half
of each layer's share, but on SmolLM2-135M (d_mlp 1 536) it realises a tenth, and erasing 16 known facts at layers
3–6 left 81% of them recalled (z itself had reached p = 0.017). By default λ is therefore
``mom2_per_d_mlp`` × d_mlp with GPT-J's ratio (15 000 / 16 384): 1 406 on SmolLM2, which erased the same 16 facts
to 25% recall with retained recall unchanged (100 → 100%). Set ``mom2_update_weight`` to use an absolute λ.

Goals are ROME's: ``rewrite`` to target_new, ``erase`` by suppressing target_true (default) or rewriting to a
neutral answer. The function edits the model only inside `edit.deltas.apply_deltas` (restored on exit) and
returns the deltas; C is read from the unedited model before any update, as in the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float

from edit.context import activations_at_subject, averaged_keys, context_templates, fill
from edit.covariance import CovarianceConfig, regularised, second_moments
from edit.deltas import WeightEditResult, apply_deltas, changed_tensors, hf_name_map
from edit.result import EditRequest
from edit.sink import warn_sink_prompts
from edit.sites import edit_site, projection_output, weight_output_change
from edit.value_opt import Goal, ValueOptConfig, ValueOptSettings, optimise_values
from edit.word_keys import WordKeys, check_neighbour_keys, kin_moment, word_keys
from obliviate.config.loader import InvalidField
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec


@dataclass
class KeyValueConfig(ValueOptConfig):
    """What the MEMIT family shares: the edited blocks, how z is optimised (`edit.value_opt.ValueOptConfig`, with
    MEMIT's own clamp) and how keys and C are gathered (reference GPT-2 XL values, ``hparams/MEMIT/gpt2-xl.json``).
    MEMIT and AlphaEdit add their own solve's settings."""

    layers: list[int] | None = None
    """Contiguous blocks to edit; None lets the caller decide (EditConfig.layers / locate)."""
    context_lengths: list[tuple[int, int]] = field(default_factory=lambda: [(10, 5)])
    """(tokens per generated prefix, number of prefixes), besides the bare "{}" prompt."""
    clamp_norm_factor: float = 0.75
    """‖δ‖ is kept ≤ this × ‖h‖ (the residual at the last edited block)."""
    facts_per_batch: int = 16
    """Facts whose z are optimised together (one forward for all; results are per fact)."""
    one_z_per_subject: bool = False
    """Optimise one z per subject on the mean loss of all its facts (edit.value_opt ``tie_subjects``): the key is
    the subject's, so several facts of one subject are one key that can hold one value. For erasing or rewriting
    several facts of the same subjects; the references (one fact per subject) do not need it."""
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    """How C is estimated (corpus, tokens, ridge)."""
    seed: int = 0
    """Seed of the generated prefixes."""

    def settings(self, **internal) -> ValueOptSettings:
        return super().settings(facts_per_batch=self.facts_per_batch, tie_subjects=self.one_z_per_subject,
                                **internal)


@dataclass
class MemitConfig(KeyValueConfig):
    """MEMIT hyper-parameters; defaults follow the reference's GPT-2 XL values (``hparams/MEMIT/gpt2-xl.json``)
    except λ, which scales with d_mlp (module docstring)."""

    mom2_update_weight: float | None = None
    """λ: weight of the corpus statistics against the batch's keys (reference: 20000 GPT-2 XL, 15000 GPT-J);
    None = mom2_per_d_mlp × d_mlp (see the module docstring)."""
    mom2_per_d_mlp: float = 15000.0 / 16384
    """λ per MLP dimension when mom2_update_weight is None (GPT-J's reference ratio)."""
    neighbour_keys: int = 0
    """Keep the update off each fact's kin, as ROME's `neighbour_keys` does: at each edited block, the keys of this
    many vocabulary words nearest each fact's key (`edit.word_keys`; words inside any subject of the batch left out)
    join C in the preservation term, λ(C + weight/count · Σ kₙkₙᵀ); 0 (the reference) uses C alone. The banks are read
    from the model as given (sequential batches: pass the unedited model's, like C)."""
    neighbour_weight: float = 1.0
    """Each fact's kept keys' weight against C, in total (each adds neighbour_weight / neighbour_keys · k kᵀ)."""

    def validate(self) -> None:
        super().validate()
        check_neighbour_keys(self.neighbour_keys, self.neighbour_weight)


LayerSolve = Callable[[int, Float[torch.Tensor, "n d_mlp"], Float[torch.Tensor, "n d_model"]],
                      Float[torch.Tensor, "d_mlp d_model"]]
"""(block, the facts' keys there, the residual that block must write) → ΔW of its down-projection (TL layout)."""


def mom2_weight(cfg: MemitConfig, d_mlp: int) -> float:
    """The λ of the solve: the configured absolute value, or mom2_per_d_mlp × d_mlp."""
    return cfg.mom2_update_weight if cfg.mom2_update_weight is not None else cfg.mom2_per_d_mlp * d_mlp


def memit_templates(handle, cfg: KeyValueConfig) -> list[list[str]]:
    """The prefix template groups MEMIT uses (sampled once; pass them to `memit_edit` to reuse)."""
    return context_templates(handle, [tuple(x) for x in cfg.context_lengths], seed=cfg.seed)


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """`layers` sorted, or an InvalidField naming 'layers' when they are missing, not contiguous, or not blocks of
    the model."""
    if layers is None or not list(layers):
        raise InvalidField("layers", "the MEMIT family needs at least one block; give layers (argument, the "
                                     "method's params or EditConfig.layers).")
    layers = sorted(int(x) for x in layers)
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise InvalidField("layers", f"{layers} is not a contiguous range of blocks; give e.g. "
                                     f"[{layers[0]}, {layers[0] + 1}].")
    if layers[0] < 0 or layers[-1] >= n_layers:
        raise InvalidField("layers", f"{layers} is outside the model's blocks 0..{n_layers - 1}; choose blocks in "
                                     f"that range.")
    return layers


def bare_prompt_activations(handle, hook: str, facts: Sequence[Fact]) -> torch.Tensor:
    """`hook`'s activation at the subject's last token of each fact's bare prompt."""
    filled = [fill("{}", f.prompt, f.subject) for f in facts]
    return activations_at_subject(handle, hook, [t for t, _ in filled], [e for _, e in filled])


def memit_edit(handle, facts: Sequence[Fact], layers: Sequence[int] | None = None, cfg: MemitConfig | None = None,
               goal: Goal = "erase", *, templates: list[list[str]] | None = None,
               moments: Mapping[int, torch.Tensor] | None = None, banks: Mapping[int, WordKeys] | None = None,
               show_progress: bool = False) -> WeightEditResult:
    """One MEMIT batch edit of `facts` over `layers` (or ``cfg.layers``); returns the deltas, never applies them.

    `moments` (C per layer) replaces the statistics of the model as it is now: sequential MEMIT reads C once from
    the unedited model, as the references do; `banks` (word keys per layer, with ``cfg.neighbour_keys``) likewise."""
    cfg = cfg or MemitConfig()
    layers = check_layers(cfg.layers if layers is None else layers, handle.n_layers)
    tick = time.perf_counter()
    if moments is None:
        moments = second_moments(handle, layers, cfg.covariance, show_progress=show_progress)
    if cfg.neighbour_keys and banks is None:
        banks = {layer: word_keys(handle, layer, cache=cfg.covariance.cache) for layer in layers}
    lam = mom2_weight(cfg, int(handle.tl.cfg.d_mlp))
    covariance_s = time.perf_counter() - tick
    kept: dict[int, list[list[str]]] = {}

    def solve(layer: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        k = keys.double().T  # [d_mlp, n]
        preserved = regularised(moments[layer], cfg.covariance.ridge)
        if cfg.neighbour_keys:
            kin, kept[layer] = kin_moment(banks[layer], keys, [f.subject for f in facts], cfg.neighbour_keys,
                                          cfg.neighbour_weight)
            preserved = preserved + kin
        lhs = lam * preserved + k @ k.T
        return (torch.linalg.solve(lhs, k) @ residual.double()).float()  # [d_mlp, d_model]

    result = write_facts(handle, facts, layers, cfg, goal, solve, method="memit", templates=templates,
                         show_progress=show_progress)
    result.timings = {"covariance_s": covariance_s, **result.timings,
                      "total_s": result.timings["total_s"] + covariance_s}
    result.config["mom2_weight_used"] = lam
    if kept:  # the last block's, nearest first, for the record
        result.metrics["kept_words"] = {f.case_id: words[:8] for f, words in zip(facts, kept[layers[-1]])}
    return result


def write_facts(handle, facts: Sequence[Fact], layers: list[int], cfg: KeyValueConfig, goal: Goal,
                solve: LayerSolve, *, method: str, templates: list[list[str]] | None = None,
                show_progress: bool = False) -> WeightEditResult:
    """MEMIT's steps 1 and 2 (module docstring) with the per-block least-squares `solve` supplied by the method:
    z for each fact at the last block, then for each block in order, with the earlier blocks' updates in place,
    the facts' keys and the residual share (z − h) / (blocks left) handed to `solve`."""
    if not facts:
        raise ValueError(f"{method} needs at least one fact.")
    sites = {layer: edit_site(handle, layer) for layer in layers}
    z_site = sites[layers[-1]]
    timings: dict[str, float] = {}
    start = time.perf_counter()

    tick = time.perf_counter()
    groups = templates if templates is not None else memit_templates(handle, cfg)
    timings["templates_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    flat = [t for group in groups for t in group]
    values = optimise_values(handle, facts, z_site, flat, at="resid", goal=goal, settings=cfg.settings(),
                             show_progress=show_progress)
    z = values.target
    timings["optimise_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    deltas: dict[str, torch.Tensor] = {}
    per_layer: dict[str, float] = {}
    vectors: dict[str, torch.Tensor] = {"z": z, "z_init": values.init}
    prompts, subjects = [f.prompt for f in facts], [f.subject for f in facts]
    for i, layer in enumerate(layers):
        site = sites[layer]
        with apply_deltas(handle, deltas, hf=False):
            keys = averaged_keys(handle, site.key_hook, prompts, subjects, groups, group_mean=True)
            current = bare_prompt_activations(handle, z_site.resid_hook, facts)
            own = (projection_output(handle.tl, site, bare_prompt_activations(handle, site.key_hook, facts))
                   if site.out_norm is not None else None)
        # the residual's share, as a change of the projection's own output (through a post-MLP norm if any)
        residual = weight_output_change(handle.tl, site, (z - current) / (len(layers) - i), own)
        deltas[site.weight] = solve(layer, keys, residual)
        vectors[f"keys_L{layer}"], vectors[f"residual_L{layer}"] = keys, residual
        per_layer[f"z_error_L{layer}"] = float((z - current).norm(dim=-1).mean())
        per_layer[f"delta_norm_L{layer}"] = float(deltas[site.weight].norm())
    timings["solve_s"] = time.perf_counter() - tick
    sinks = warn_sink_prompts(handle, facts, layers[-1], method)
    timings["total_s"] = time.perf_counter() - start
    final_losses = [curve[-1] for curve in values.losses if curve]
    return WeightEditResult(
        method=method, goal=goal, changed=changed_tensors(handle, deltas), targets=[f.case_id for f in facts],
        layers=list(layers), timings=timings, deltas=deltas, hf_names=hf_name_map(handle, deltas),
        vectors=vectors, losses=values.losses,
        metrics={"n_facts": len(facts), "mean_final_loss": sum(final_losses) / max(len(final_losses), 1),
                 "mean_goal_prob": sum(values.goal_prob) / len(values.goal_prob), **per_layer,
                 **({"sink_prompts": sinks} if sinks else {})},
        config={**asdict(cfg), "layers": list(layers), "goal": goal})


@EDITS.register("memit", MemitConfig, spec=Spec(
    goals=("erase", "rewrite"), layers="range", proposal="mlp_peak",
    knob=Knob("mom2_per_d_mlp", 0.01, 100.0, stronger="lower",
              doc="λ per MLP dimension (the covariance weight; smaller λ writes more of each fact)")))
def memit_method(handle, request: EditRequest, cfg: MemitConfig) -> WeightEditResult:
    """MEMIT on every target at once. Layers: the request's, else ``cfg.layers``, else locate's proposal (one layer
    is a valid one-block range), else the middle block."""
    layers = request.pick(cfg.layers, [handle.n_layers // 2])
    return memit_edit(handle, request.targets, layers, cfg, goal=request.goal)
