"""ROME: Rank-One Model Editing (Meng, Bau, Andonian & Belinkov, NeurIPS 2022, "Locating and Editing Factual
Associations in GPT"); reference code kmeng01/rome ``rome/rome_main.py``, ``compute_u.py``, ``compute_v.py``.

One fact is written into the MLP down-projection W of block L (`edit.sites`) as ΔW = u vᵀ:

1. k* — the down-projection input at the subject's last token, averaged over the bare prompt and 20 prefixed
   copies (10 model-generated texts of 5 tokens, 10 of 10; `edit.context`).
2. u = C⁻¹k* / ‖C⁻¹k*‖, C = E[k kᵀ] over a local corpus plus a small ridge (`edit.covariance`).
3. δ — optimised at the MLP output (`edit.value_opt`), so that the target value is v* = W k* + δ.
4. v = (v* − W k*) / (k*·u) = δ / (k*·u), so the edited layer maps k* to exactly v*.

The reference divides by the key of the *unprefixed* prompt in step 4 while u used the averaged k* (rome#32); the
mismatch scales the update wrongly and causes its "disabling edits". We use the averaged k* in both places, the
fix of r-ROME (Gupta et al. 2024, "Rebuilding ROME"); ``consistent_keys=False`` reproduces the reference.

``neighbour_keys`` adds what the references' Wikipedia statistics give and a local corpus does not: the keys of
the subject's nearest kin. The keys of that many words of the model's own vocabulary nearest k* (`edit.word_keys`)
join C as preserved keys, so u answers less to other countries of a continent or other red fruits (README, "ROME on
SmolLM2").

The function never changes the model it is given: it returns a `WeightEditResult` with ΔW (TL layout), the full
edited HF tensor in ``changed``, u, v, k*, δ, the loss curve and timings. Apply it with `edit.deltas.apply_deltas`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float

from edit.context import activations_at_subject, context_templates, fill, template_keys
from edit.covariance import CovarianceConfig, Solver, metric_solver
from edit.deltas import WeightEditResult, apply_deltas, changed_tensors, hf_name_map
from edit.result import EditRequest, EditResult
from edit.sink import warn_sink_prompts
from edit.sites import edit_site
from edit.value_opt import Goal, ValueOptConfig, optimise_values
from edit.word_keys import PreservingSolver, check_neighbour_keys, word_keys
from obliviate.config.loader import InvalidField
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec


@dataclass
class RomeConfig(ValueOptConfig):
    """ROME hyper-parameters; defaults are the reference's GPT-2 XL values (``hparams/ROME/gpt2-xl.json``). The v*
    optimisation's settings (lr, steps, kl_factor, …, compute_dtype) are `edit.value_opt.ValueOptConfig`'s."""

    layer: int | None = None
    """Block whose MLP down-projection is edited; None lets the caller decide (EditConfig.layers / locate)."""
    context_lengths: list[tuple[int, int]] = field(default_factory=lambda: [(5, 10), (10, 10)])
    """(tokens per generated prefix, number of prefixes) — the reference's context_template_length_params."""
    consistent_keys: bool = True
    """Use the averaged k* in v = δ/(k*·u) (r-ROME); False divides by the bare prompt's key like the reference."""
    every_template_key: bool = False
    """Give the key of *every* template exactly δ (u = C⁻¹K(KᵀC⁻¹K)⁻¹1 over the template keys K, v = δ):
    what the v* optimisation assumed when it added δ in every template. The averaged k* (ROME) gives the mean key δ,
    and a key far from the mean — SmolLM2's bare prompt, whose subject sits at position 0 without a BOS — much
    less; True overrides `consistent_keys`."""
    mom2_adjustment: bool = True
    """u = C⁻¹k* (True, the reference) or u = k* (False: no covariance, the "naive" rank-one update)."""
    neighbour_keys: int = 0
    """Keep the update off the subject's kin: the keys of this many words of the model's vocabulary nearest k*
    (`edit.word_keys`: each whole-word token read in a neutral frame; words inside the subject's name left out)
    join C as preserved keys, as MEMIT preserves its keys; 0 (the reference) uses C alone. The edit's record names
    the words kept. Needs mom2_adjustment."""
    neighbour_weight: float = 1.0
    """The kept keys' weight against C, in total (each adds neighbour_weight / neighbour_keys · k kᵀ to C)."""
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    """How C is estimated (corpus, tokens, ridge)."""
    seed: int = 0
    """Seed of the generated prefixes."""

    def validate(self) -> None:
        super().validate()
        check_neighbour_keys(self.neighbour_keys, self.neighbour_weight)
        if self.neighbour_keys and not self.mom2_adjustment:
            raise InvalidField("neighbour_keys", "preserved keys join C, and mom2_adjustment is false (no C); set "
                                                 "mom2_adjustment: true or neighbour_keys: 0.")


def every_key_direction(keys: Float[torch.Tensor, "n_templates d"],
                        metric: Solver | None) -> Float[torch.Tensor, " d"]:
    """The u of least uᵀCu with k·u = 1 for every row k of `keys`: u = C⁻¹K(KᵀC⁻¹K)⁻¹1 (C = I when None).

    The template keys of one subject are close to each other, so KᵀC⁻¹K can be near-singular: a ridge of 1e-6 of
    its mean diagonal keeps the solve stable (SmolLM2, 21 templates, layers 4 and 6: every k·u is 1 to 5 decimals).
    """
    k = keys.double().T  # [d, n]
    c_inv_k = metric.solve(k) if metric is not None else k
    gram = k.T @ c_inv_k
    gram = gram + 1e-6 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    return (c_inv_k @ torch.linalg.solve(gram, torch.ones(gram.shape[0], dtype=gram.dtype))).float()


@dataclass
class KeyDirection:
    """ROME's key side of one fact: u (unit), the averaged key k*, the vocabulary words kept off (if any)."""

    u: Float[torch.Tensor, " d_mlp"]
    k_star: Float[torch.Tensor, " d_mlp"]
    kept_words: list[str]
    timings: dict[str, float]


def key_direction(handle, fact: Fact, layer: int, cfg: RomeConfig, templates: list[str], *,
                  show_progress: bool = False) -> KeyDirection:
    """Steps 1–2 of the module docstring for `fact` at `layer`, over the flat `templates`: k*, then u from C (with
    the nearest vocabulary words' keys preserved when ``cfg.neighbour_keys``), as `rome_edit` uses them."""
    site = edit_site(handle, layer)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    metric = metric_solver(handle, layer, cfg.covariance, show_progress=show_progress) if cfg.mom2_adjustment \
        else None
    timings["covariance_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    keys = template_keys(handle, site.key_hook, [fact.prompt], [fact.subject], templates)[0]
    k_star = keys.mean(0)
    kept_words: list[str] = []
    if cfg.neighbour_keys and metric is not None:
        bank = word_keys(handle, layer, cache=cfg.covariance.cache)
        rows = bank.nearest(k_star, cfg.neighbour_keys, bank.inside([fact.subject]))
        metric = PreservingSolver.build(metric, bank.keys[rows], cfg.neighbour_weight)
        kept_words = [bank.words[row] for row in rows]
    if cfg.every_template_key:
        direction = every_key_direction(keys, metric)
    else:
        direction = metric.solve(k_star).float() if metric is not None else k_star.clone()
    timings["keys_s"] = time.perf_counter() - tick
    return KeyDirection(u=direction / direction.norm(), k_star=k_star, kept_words=kept_words, timings=timings)


def rome_templates(handle, cfg: RomeConfig) -> list[list[str]]:
    """The prefix templates ROME uses (sampled once; pass them to `rome_edit` to reuse across edits)."""
    return context_templates(handle, [tuple(x) for x in cfg.context_lengths], seed=cfg.seed)


def rome_edit(handle, fact: Fact, layer: int | None = None, cfg: RomeConfig | None = None, goal: Goal = "rewrite",
              *, templates: list[list[str]] | None = None, show_progress: bool = False) -> WeightEditResult:
    """One ROME edit of `fact` at `layer` (or ``cfg.layer``); returns the rank-one delta, never applies it."""
    cfg = cfg or RomeConfig()
    layer = cfg.layer if layer is None else layer
    if layer is None:
        raise ValueError("rome_edit needs a layer (argument or RomeConfig.layer).")
    site = edit_site(handle, layer)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    tick = time.perf_counter()
    groups = templates if templates is not None else rome_templates(handle, cfg)
    timings["templates_s"] = time.perf_counter() - tick

    flat = [t for group in groups for t in group]
    key_side = key_direction(handle, fact, layer, cfg, flat, show_progress=show_progress)
    timings.update(key_side.timings)
    u, k_star = key_side.u, key_side.k_star

    tick = time.perf_counter()
    values = optimise_values(handle, [fact], site, flat, at="mlp_out", goal=goal, settings=cfg.settings())
    delta = values.delta[0]
    timings["optimise_s"] = time.perf_counter() - tick

    if cfg.every_template_key or cfg.consistent_keys:
        key = k_star  # with every_template_key k·u is the same for every template key, so for their mean too
    else:
        text, end = fill("{}", fact.prompt, fact.subject)
        key = activations_at_subject(handle, site.key_hook, [text], [end])[0]
    v = delta / torch.dot(key, u)
    delta_w = torch.outer(u, v)
    sink = warn_sink_prompts(handle, [fact], layer, "rome").get(fact.case_id, [])
    deltas = {site.weight: delta_w}
    timings["total_s"] = time.perf_counter() - start
    return WeightEditResult(
        method="rome", goal=goal, changed=changed_tensors(handle, deltas), targets=[fact.case_id], layers=[layer],
        timings=timings, deltas=deltas, hf_names=hf_name_map(handle, deltas),
        vectors={"u": u, "v": v, "k_star": k_star, "delta": delta, "v_init": values.init[0]},
        losses=values.losses,
        metrics={"final_loss": values.losses[0][-1] if values.losses[0] else None, "steps": len(values.losses[0]),
                 "goal_prob": values.goal_prob[0], "delta_norm": float(delta.norm()),
                 "v_init_norm": float(values.init[0].norm()), "key_dot_u": float(torch.dot(key, u)),
                 **({"kept_words": key_side.kept_words} if key_side.kept_words else {}),
                 **({"sink_prompts": sink} if sink else {})},
        config={**asdict(cfg), "layer": layer, "goal": goal})


@EDITS.register("rome", RomeConfig, spec=Spec(
    goals=("erase", "rewrite"), layers="one", proposal="mlp_peak",
    knob=Knob("clamp_norm_factor", 0.25, 16.0, doc="the bound on ‖δ‖ in multiples of ‖v_init‖")))
def rome_method(handle, request: EditRequest, cfg: RomeConfig) -> EditResult:
    """Sequential ROME: one rank-one edit per target, each on top of the previous ones (as users chain them).

    Layer: the request's, else ``cfg.layer``, else locate's MLP peak, else the middle block.
    """
    layer = request.pick([cfg.layer] if cfg.layer is not None else None, [handle.n_layers // 2])[0]
    templates = rome_templates(handle, cfg)
    total: dict[str, torch.Tensor] = {}
    losses = []
    kept: dict[int, list[str]] = {}
    sinks: dict[int, list[str]] = {}  # prompts the edit cannot reach (edit/sink.py)
    start = time.perf_counter()
    for fact in request.targets:
        with apply_deltas(handle, total):
            result = rome_edit(handle, fact, layer, cfg, goal=request.goal, templates=templates)
        for name, delta in result.deltas.items():
            total[name] = total.get(name, 0) + delta
        losses.append(result.losses[-1][-1] if result.losses and result.losses[-1] else float("nan"))
        if "kept_words" in result.metrics:
            kept[fact.case_id] = result.metrics["kept_words"][:8]  # the nearest, for the record
        if "sink_prompts" in result.metrics:
            sinks[fact.case_id] = result.metrics["sink_prompts"]
    metrics = {"final_losses": losses, **({"kept_words": kept} if kept else {}),
               **({"sink_prompts": sinks} if sinks else {})}
    return EditResult(method="rome", changed=changed_tensors(handle, total),
                      targets=[f.case_id for f in request.targets], layers=[layer],
                      timings={"edit": time.perf_counter() - start}, metrics=metrics,
                      config={**asdict(cfg), "layer": layer})
