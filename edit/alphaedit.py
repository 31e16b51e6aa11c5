"""AlphaEdit: null-space constrained knowledge editing (Fang, Jiang, Wang, Ma, Shi, Wang, He & Chua, ICLR 2025,
"AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models"); reference code jianghoucheng/AlphaEdit
``AlphaEdit/AlphaEdit_main.py`` (the update) and ``experiments/evaluate.py`` (``get_project``, the sequential loop).

MEMIT's batched update, with the part that could disturb preserved knowledge removed before it is solved for:

1. z, the keys K [d_mlp, n] and the residual R of each block are MEMIT's (`edit.memit.write_facts`).
2. P = U Uᵀ per block, U the eigenvectors of C = E[k kᵀ] (the preserved keys K₀K₀ᵀ / N over a local corpus,
   `edit.covariance`) whose eigenvalues are below ``nullspace_threshold``: the directions preserved keys
   almost never take. P is computed once, from the unedited model, before any edit.
3. ΔW = (P (K Kᵀ + K_p K_pᵀ) + α I)⁻¹ P K R (TL layout [d_mlp, d_model]), α = ``l2``, K_p the keys of every
   batch written earlier. ΔW lies in P's range (α ΔW = P(K R − (K Kᵀ + K_p K_pᵀ) ΔW)), so a preserved key k₀
   gets k₀ᵀ ΔW = (P k₀)ᵀ ΔW ≈ 0; the K_p term keeps the earlier batches' keys mapped where they were
   written.
4. Sequential editing: the facts go in batches of ``edits_per_batch``, each solved on the model with every earlier
   batch applied, P fixed and K_p K_pᵀ grown by each batch's keys.

Deviations from the reference, in the project's terms:
- P comes from ``eigh`` of C (the reference takes the SVD, the same factors for a symmetric PSD matrix), in
  float64, as is the solve; C is the local-corpus statistic (`edit.covariance`), not Wikipedia's.
- K_p K_pᵀ accumulates the keys the batch computed while writing; the reference recomputes them after the batch
  is applied, which gives the same keys: a block's keys depend only on the blocks before it, and those updates are
  in place when the block's keys are taken.
- The threshold is absolute on the eigenvalues of the per-token mean C, as the reference's 2e-2, so what it keeps
  depends on the model's key scale (``nullspace_energy``, below, is the scale-free alternative). On this
  project's statistics (50k tokens) 2e-2 takes 52–58% of the world model's 512 key directions at blocks 1–2,
  holding 0.3–0.5% of C's energy (a true null space), but none at its block 0; on SmolLM2 (mean eigenvalue
  ≈ 0.01–0.02) it takes 77–88% of the 1 536 directions at blocks 3–6, holding 27–52% of C's energy, so there
  the update is hardly constrained.
  Each block's null dimension and the share of C's energy in it are reported (``null_dims_L*``,
  ``null_energy_L*``); an edit whose every block has an empty null space would write nothing and is refused.
- ``nullspace_energy`` (not in the reference) sets the null space by what it may cost instead: the eigenvectors
  with the smallest eigenvalues, as many as sum to at most that share of trace(C), so the preserved keys' energy
  the update may touch is the same on every model. The absolute 2e-2 is that rule at 0.3–0.5% on the world's
  blocks 1–2; on SmolLM2, whose key spectrum has no gap (smallest eigenvalue ≈ 1/10 of the mean), 0.5% is 51–82 of
  1 536 directions at blocks 3–6.
- ``preserve_retain_keys`` (not in the reference, off by default): the keys of facts the caller names to keep (the
  request's retain facts; the bench's never-edited, never-measured known facts) are removed from P's range too,
  P' = P − A A⁺ with A = P K_f (K_f: each kept fact's key at its subject's last token, on its bare prompt and
  averaged over the context templates), the projector onto range(P) ∩ null(K_fᵀ): the update then leaves those
  exact keys' outputs unchanged at every edited block, whatever the generic C says about them. Directions of A whose
  singular value is below 1e-6 of K_f's largest are kept (they carry no kept key's energy worth the freedom).
  A kept fact about an edited subject is dropped from that set (`keepable`): its key at the subject's last token
  is the edited fact's own (exactly so on a bare prompt that begins with the subject), so keeping it would forbid
  the edit on that prompt. Those facts move with the edit, as in every method that writes at the subject. (On
  SmolLM2 at N = 10 the one such fact among 181 made no measured difference; the kept set's size did, README.)
- ``c_without_edited_subjects`` (not in the reference, off by default): C is estimated from the corpus with every
  edited subject left out (`edit.covariance`'s ``exclude_subjects``: no mention of it, no paragraph naming it).
  AlphaEdit's K₀ is the knowledge to preserve; the reference draws it from 100k Wikipedia texts, where the few
  thousand edited subjects are a sliver of the named entities, so it hardly matters that they are in it. In a small
  world they are most of them (1,000 edits touch 175 of the world's 200 subjects), their keys then fill C's large
  directions, and a null space that avoids them cannot write the edit. Measured on world v3 at N = 1,000 (README,
  many edits): at the reference's threshold ES 24 → 47 and the unedited subjects' recall 0.79 → 0.95; subjects
  named nowhere in C are not protected (0.44) — the null space keeps what C holds, nothing more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from jaxtyping import Float

from edit.covariance import excluded_names, second_moments
from edit.deltas import WeightEditResult, batched, changed_tensors, hf_name_map, sequential_edits
from edit.context import averaged_keys
from edit.memit import KeyValueConfig, bare_prompt_activations, check_layers, memit_templates, write_facts
from edit.sites import edit_site
from edit.result import EditRequest
from edit.value_opt import Goal
from obliviate.config.loader import InvalidField
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec


@dataclass
class AlphaEditConfig(KeyValueConfig):
    """AlphaEdit hyper-parameters; defaults are the reference's (``hparams/AlphaEdit/gpt2-xl.json``: threshold
    2e-2, L2 10; the paper's sequential runs write 100 edits per batch)."""

    nullspace_threshold: float = 2e-2
    """Eigenvalues of C below this span the null space the update is confined to (absolute, as the reference's;
    larger keeps more directions: the edit is freer and preserves less)."""
    nullspace_energy: float | None = None
    """Scale-free alternative to ``nullspace_threshold`` (which it replaces when set): the null space is the
    smallest-eigenvalue directions of C whose eigenvalues sum to at most this share of trace(C), e.g. 0.005."""
    l2: float = 10.0
    """α: the ridge of the solve (the reference's L2); larger writes less of each fact."""
    edits_per_batch: int | None = 100
    """Facts written per sequential batch; None writes all targets in one batch."""
    preserve_retain_keys: bool = False
    """Also keep the retain facts' own keys out of the update's range (module docstring): their outputs at the edited
    blocks stay exactly as they were (not in the reference)."""
    c_without_edited_subjects: bool = False
    """Estimate C, whose null space the update is confined to, from the corpus without the edited subjects (module
    docstring): the preserved keys are then the knowledge to keep, not the keys the edit must move (not in the
    reference)."""

    def validate(self) -> None:
        super().validate()
        if not (math.isfinite(self.nullspace_threshold) and self.nullspace_threshold > 0):
            raise InvalidField("nullspace_threshold", f"{self.nullspace_threshold!r}: use a number > 0 (the "
                                                      f"reference's 2e-2); eigenvalues below it form the null space.")
        if self.nullspace_energy is not None and not (math.isfinite(self.nullspace_energy)
                                                      and 0 < self.nullspace_energy < 1):
            raise InvalidField("nullspace_energy", f"{self.nullspace_energy!r}: use a share of C's energy in (0, 1), "
                                                   f"e.g. 0.005, or null for the absolute nullspace_threshold.")
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise InvalidField("l2", f"{self.l2!r}: use a number > 0 (the reference's 10); P is singular, so the "
                                     f"solve needs the ridge.")
        if self.edits_per_batch is not None and self.edits_per_batch < 1:
            raise InvalidField("edits_per_batch", f"{self.edits_per_batch!r}: use a positive number, or null for "
                                                  f"one batch.")


def null_space_projection(moment: Float[torch.Tensor, "d d"], threshold: float | None = None, *,
                          energy: float | None = None) -> Float[torch.Tensor, "d d"]:
    """P = U Uᵀ (float64), U the eigenvectors of the symmetric PSD `moment` with eigenvalue < `threshold`, or, with
    `energy`, the smallest-eigenvalue ones whose eigenvalues sum to at most that share of the trace."""
    if (threshold is None) == (energy is None):
        raise ValueError("null_space_projection takes one of threshold= (absolute) or energy= (share of the trace).")
    moment = moment.double()
    eigenvalues, eigenvectors = torch.linalg.eigh((moment + moment.T) / 2)  # ascending
    if energy is None:
        if not (math.isfinite(threshold) and threshold > 0):
            raise InvalidField("nullspace_threshold", f"{threshold!r}: use a number > 0.")
        null = eigenvectors[:, eigenvalues < threshold]
    else:
        if not (math.isfinite(energy) and 0 < energy < 1):
            raise InvalidField("nullspace_energy", f"{energy!r}: use a share in (0, 1).")
        share = torch.cumsum(eigenvalues.clamp(min=0), 0) / eigenvalues.clamp(min=0).sum().clamp(min=1e-300)
        null = eigenvectors[:, : int((share <= energy).sum())]
    return null @ null.T


def without_span(projection: Float[torch.Tensor, "d d"], keys: Float[torch.Tensor, "n d"], *,
                 rtol: float = 1e-6) -> Float[torch.Tensor, "d d"]:
    """P − A A⁺ (float64), A = P Kᵀ: the projector onto range(P) ∩ null(K) (each row of `keys` a key to keep).

    Valid because range(A) ⊂ range(P) and, for v in range(P), K v = K P v = Aᵀ v. Singular directions of A below
    `rtol` × the largest singular value of K are not removed (keys outside P's range remove nothing)."""
    p, keys = projection.double(), keys.double()
    a = p @ keys.T
    u, sigma, _ = torch.linalg.svd(a, full_matrices=False)
    kept = u[:, sigma > rtol * torch.linalg.matrix_norm(keys, ord=2).clamp(min=1e-300)]
    out = p - kept @ kept.T
    return (out + out.T) / 2


def edited_subjects(facts: Sequence[Fact]) -> list[str]:
    """The distinct subjects of `facts`, sorted: what ``c_without_edited_subjects`` leaves out of C's corpus."""
    return sorted({f.subject for f in facts})


def keepable(preserved: Sequence[Fact], targets: Sequence[Fact]) -> list[Fact]:
    """The `preserved` facts whose subject no target has (the others share the edited key; module docstring)."""
    edited = set(edited_subjects(targets))
    return [f for f in preserved if f.subject not in edited]


def fact_keys(handle, layer: int, facts: Sequence[Fact], templates: list[list[str]]) -> Float[torch.Tensor, "n d"]:
    """The keys `facts` are read with at `layer`: on the bare prompt and averaged over the context templates (the
    two rows per fact a MEMIT-family update sees for an edited fact)."""
    hook = edit_site(handle, layer).key_hook
    prompts, subjects = [f.prompt for f in facts], [f.subject for f in facts]
    return torch.cat([bare_prompt_activations(handle, hook, facts),
                      averaged_keys(handle, hook, prompts, subjects, templates, group_mean=True)])


class NullSpaceEditor:
    """Sequential AlphaEdit's state over `layers`: P per block (fixed) and Σ K_p K_pᵀ of the batches written so far.

    Call it with each batch, on the model with the earlier batches applied (`edit.deltas.sequential_edits`); it
    returns that batch's deltas and remembers its keys. `projections` replaces the P computed from the current
    model's C (tests give P of known keys); `preserved` facts' own keys are then taken out of P's range
    (``preserve_retain_keys``; `without_span`), read on the current model. `exclude_subjects` are left out of C's
    corpus (``c_without_edited_subjects``: the subjects of every fact the run will edit, all batches included).
    """

    def __init__(self, handle, layers: Sequence[int], cfg: AlphaEditConfig, *,
                 projections: Mapping[int, torch.Tensor] | None = None, templates: list[list[str]] | None = None,
                 preserved: Sequence[Fact] = (), exclude_subjects: Sequence[str] = (), show_progress: bool = False):
        cfg.validate()
        self.handle, self.cfg, self.show_progress = handle, cfg, show_progress
        self.layers = check_layers(layers, handle.n_layers)
        tick = time.perf_counter()
        # the config's own exclusions and this run's edited subjects
        left_out = set(cfg.covariance.exclude_subjects) | set(exclude_subjects)
        covariance = replace(cfg.covariance, exclude_subjects=tuple(sorted(left_out)))
        moments = second_moments(handle, self.layers, covariance, show_progress=show_progress) \
            if projections is None else None
        self.projections = {layer: projections[layer].double() if projections is not None
                            else null_space_projection(moments[layer],
                                       None if cfg.nullspace_energy else cfg.nullspace_threshold,
                                       energy=cfg.nullspace_energy)
                            for layer in self.layers}
        self.templates = templates if templates is not None else memit_templates(handle, cfg)
        if preserved:
            self.projections = {layer: without_span(p, fact_keys(handle, layer, preserved, self.templates))
                                for layer, p in self.projections.items()}
        self.summary: dict[str, float] = {"n_preserved_facts": len(preserved)} if preserved else {}
        if moments is not None and covariance.exclude_subjects:  # given projections read no C at all
            self.summary["n_subjects_out_of_c"] = len(excluded_names(covariance.exclude_subjects))
        for layer, p in self.projections.items():
            self.summary[f"null_dims_L{layer}"] = round(float(p.trace()))
            if moments is not None:
                c = moments[layer].double()
                # tr(PC) ≥ 0 for PSD P and C; in float64 it can land a few 1e-9 below 0 when P holds almost none of C
                energy = float((p * c).sum() / c.trace().clamp(min=1e-30))
                self.summary[f"null_energy_L{layer}"] = max(energy, 0.0)
        if not any(self.summary[f"null_dims_L{layer}"] for layer in self.layers):
            if preserved:
                raise InvalidField("preserve_retain_keys", f"the {len(preserved)} kept facts' keys fill the null "
                                                           f"space at blocks {self.layers}: the edit would write "
                                                           f"nothing; keep fewer facts or widen the null space.")
            field, value = (("nullspace_energy", cfg.nullspace_energy) if cfg.nullspace_energy
                            else ("nullspace_threshold", cfg.nullspace_threshold))
            raise InvalidField(field, f"{value!r} leaves an empty null space at blocks {self.layers} (every "
                                      f"eigenvector of C is needed): the edit would write nothing; raise it or edit "
                                      f"other blocks.")
        self.setup_s = time.perf_counter() - tick
        d_mlp = next(iter(self.projections.values())).shape[0]
        self.edited = {layer: torch.zeros(d_mlp, d_mlp, dtype=torch.float64) for layer in self.layers}

    def solve(self, layer: int, keys: Float[torch.Tensor, "n d_mlp"],
              residual: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "d_mlp d_model"]:
        """ΔW = (P(KKᵀ + K_pK_pᵀ) + αI)⁻¹ P K R at `layer` (module docstring, step 3)."""
        p, k = self.projections[layer], keys.double().T  # [d_mlp, n]
        lhs = p @ (k @ k.T + self.edited[layer]) + self.cfg.l2 * torch.eye(p.shape[0], dtype=torch.float64)
        return torch.linalg.solve(lhs, p @ k @ residual.double()).float()

    def __call__(self, facts: Sequence[Fact], goal: Goal = "erase") -> WeightEditResult:
        result = write_facts(self.handle, facts, self.layers, self.cfg, goal, self.solve, method="alphaedit",
                             templates=self.templates, show_progress=self.show_progress)
        for layer in self.layers:
            keys = result.vectors[f"keys_L{layer}"].double()
            self.edited[layer] += keys.T @ keys
        result.metrics.update(self.summary)
        return result


def alphaedit_edits(handle, facts: Sequence[Fact], layers: Sequence[int] | None = None,
                    cfg: AlphaEditConfig | None = None, goal: Goal = "erase", *,
                    projections: Mapping[int, torch.Tensor] | None = None, preserved: Sequence[Fact] = (),
                    show_progress: bool = False) -> WeightEditResult:
    """Sequential AlphaEdit of `facts` in batches of ``cfg.edits_per_batch`` over `layers` (or ``cfg.layers``):
    the summed deltas of every batch, never applied to the model. `preserved`: facts whose keys are kept out of
    the update (used when ``cfg.preserve_retain_keys``; those about a target's subject are dropped, `keepable`).
    With ``cfg.c_without_edited_subjects`` C is read without the subjects of `facts`."""
    cfg = cfg or AlphaEditConfig()
    start = time.perf_counter()
    editor = NullSpaceEditor(handle, cfg.layers if layers is None else layers, cfg, projections=projections,
                             preserved=keepable(preserved, facts) if cfg.preserve_retain_keys else (),
                             exclude_subjects=edited_subjects(facts) if cfg.c_without_edited_subjects else (),
                             show_progress=show_progress)
    if not facts:
        raise ValueError("alphaedit needs at least one fact.")
    total: dict[str, torch.Tensor] = {}
    batches: list[WeightEditResult] = []
    for total, result in sequential_edits(handle, batched(facts, cfg.edits_per_batch),
                                          lambda batch: editor(batch, goal)):
        batches.append(result)
    goal_probs = [r.metrics["mean_goal_prob"] for r in batches]
    return WeightEditResult(
        method="alphaedit", goal=goal, changed=changed_tensors(handle, total), targets=[f.case_id for f in facts],
        layers=editor.layers, deltas=total, hf_names=hf_name_map(handle, total),
        timings={"projection_s": editor.setup_s, "total_s": time.perf_counter() - start,
                 **{key: sum(r.timings[key] for r in batches) for key in ("optimise_s", "solve_s")}},
        losses=[curve for r in batches for curve in r.losses],
        metrics={"n_facts": len(facts), "n_batches": len(batches), **editor.summary,
                 "mean_goal_prob": sum(goal_probs) / len(goal_probs),
                 "batch_metrics": [r.metrics for r in batches]},
        config={**asdict(cfg), "layers": editor.layers, "goal": goal})


@EDITS.register("alphaedit", AlphaEditConfig, spec=Spec(
    goals=("erase", "rewrite"), layers="range", proposal="mlp_peak",
    knob=Knob("l2", 0.01, 1000.0, stronger="lower",
              doc="α, the ridge of the null-space solve (smaller α writes more of each fact)")))
def alphaedit_method(handle, request: EditRequest, cfg: AlphaEditConfig) -> WeightEditResult:
    """AlphaEdit: MEMIT's update confined to the null space of the preserved keys, in sequential batches. Layers:
    the request's, else ``cfg.layers``, else locate's proposal, else the middle block."""
    layers = request.pick(cfg.layers, [handle.n_layers // 2])
    if cfg.preserve_retain_keys and not request.retain:
        raise InvalidField("preserve_retain_keys", "true, but the request has no retain facts whose keys to keep; "
                                                   "give the run retain facts or set it false.")
    return alphaedit_edits(handle, request.targets, layers, cfg, goal=request.goal, preserved=request.retain)
