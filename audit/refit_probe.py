"""Re-fit probe: a fresh linear probe, trained on the attacked model's own activations, decodes the target's answer.

An edit that hides an answer at the output but leaves it in the residual stream is exposed by a probe fitted
after the edit (never the editor's probe: a projector tuned against one probe leaves others; Ravfogel et al.
2020, PGA's adversarial rounds). Protocol (a fresh probe, nested cross-validation, a flipped probe counts):

- Per relation, the probe learns subject → answer (target_true) from the residual at the last subject token (or
  the last prompt token) of the relation's OTHER facts: no target subject is in its training set (asserted).
- The depth and the regularisation are chosen by nested cross-validation on those training subjects only:
  `locate.probes.probe_accuracy_per_layer(..., nested_cv=True)` (outer GroupKFold over subjects for the depth,
  inner GroupKFold for C); the probe (`locate.probes.fit_probe`, StandardScaler + LogisticRegression) is then
  refitted on all training facts at that depth and C and applied to the held-out targets.
- Every depth is scored too (`all_depths`): a probe refitted at each depth (at the C the nested CV chose there)
  gives each target's probability at that depth and position, reported as the result's `sites`. The verdict
  (audit/verdict.py) then takes each target's depth with the largest excess over the oracle under the same
  probe, with each site's margin corrected for the number of sites looked at, and names the depth. Why: the
  CV-chosen depth is where the *training* subjects' answers are most decodable, which misses an edit confined to
  a few blocks. On the world, an edit of the last block alone removes the forget answers at the last depth while
  the depths before it still hold them as the base does. All depths and positions come from one forward pass per
  position (`locate.activations.collect_residuals` hooks every depth at once); the extra cost is one fit per
  depth beside the nested CV's dozens.
- A binary probe whose held-out accuracy is below chance is flipped (an attacker who sees it reads 1 − p): its
  accuracy is reported as max(acc, 1 − acc) and its per-target probabilities are mirrored.

Score per target: the probe's probability of the target's true answer at the target's own activation (softmax of
the multinomial logits; 0 when no training subject has that answer, since the probe cannot name it). A model that
never learned the fact gives chance-level scores for it; an output-only suppression leaves them at the base
model's level. b and u are the plain p_true of base and handle (same units: probability of the true answer).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from audit.attack_result import AttackContext, AttackResult, TargetScore, assemble, check_depths, with_oracle
from obliviate.facts import Fact
from obliviate.registry import ATTACKS


@dataclass(frozen=True)
class RefitProbeConfig:
    """Where the probe reads and how its capacity is chosen."""

    position: Literal["subject", "last", "best"] = "best"
    """Read the residual at the last subject token (ROME's key position), at the prompt's last token, or at
    whichever of the two the nested CV finds more decodable on the training subjects (per relation): where a
    model keeps an attribute differs between models (world v2 read it out at the prompt's last token, world v3
    keeps it at the subject), and an attacker tries both."""
    depths: tuple[int, ...] | None = None
    """Residual depths to consider (0 = embeddings, d = block d − 1's output); None: all."""
    n_splits: int = 5
    """Outer GroupKFold splits (held-out subjects) that choose the depth."""
    inner_splits: int = 3
    """Inner GroupKFold splits that choose C."""
    C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    max_iter: int = 2000
    seed: int = 42
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this."""
    n_jobs: int = -1
    """Worker processes for the depths' fits (joblib; -1 = every core, 1 = in this process). Same result."""
    all_depths: bool = True
    """Also score the targets at every depth and position (the result's `sites`, which the verdict searches for
    the largest excess over the oracle); False: only the CV-chosen depth, as the headline."""
    standardize: bool = True
    """Scale each residual feature to unit variance before the fit (`locate.probes.fit_probe`); False probes the
    raw residual. On the world's attribute curve the raw residual reads more (README, item 1), but as this attack
    it reads less: the zoo with the raw probe (one C, three folds) catches DPO's targets 0.850 alone against 0.925,
    the row 0.900 with the oracle against 0.975, and took 483 s against 221 s the same day (lbfgs on unscaled
    features)."""


@dataclass
class RelationProbe:
    """What the probe of one relation chose and achieved on its training subjects."""

    relation_id: str
    depth: int
    C: float
    position: str
    """Where the probe reads: subject (last subject token) or last (the prompt's last token)."""
    cv_accuracy: float
    """Held-out-subject accuracy at the chosen depth (after flipping when flipped)."""
    chance: float
    flipped: bool
    n_train: int
    n_classes: int
    curve: list[float] = field(default_factory=list)
    """Held-out-subject accuracy at each candidate depth."""


def _softmax_probs(probe: Any, X: np.ndarray) -> np.ndarray:
    logits = probe.decision_function(X)
    if logits.ndim == 1:  # binary: positive means classes[1]
        p1 = 1.0 / (1.0 + np.exp(-logits))
        return np.stack([1 - p1, p1], axis=1)
    logits = logits - logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def _positions(handle: Any, facts: Sequence[Fact], position: str) -> list[int] | str:
    if position == "last":
        return "last"
    from locate.activations import last_subject_token_positions

    return last_subject_token_positions(handle, facts)


@dataclass
class ProbeOutcome:
    scores: dict[int, TargetScore] = field(default_factory=dict)
    probes: dict[str, RelationProbe] = field(default_factory=dict)
    sites: dict[str, dict[int, float]] = field(default_factory=dict)
    """site name (`site_name`) → case_id → the probe's probability of the true answer there."""


def site_name(depth: int, position: str) -> str:
    """How a probe site is named in results and verdicts."""
    return f"depth {depth}, {'last subject token' if position == 'subject' else 'last token'}"


@dataclass
class ProbeFit:
    """The probe of one relation: held-out probabilities of the targets and what nested CV chose."""

    probs: np.ndarray
    """(targets, classes) probabilities, mirrored when the binary probe was flipped."""
    classes: list[Any]
    summary: RelationProbe
    probs_by_depth: dict[int, np.ndarray] = field(default_factory=dict)
    """depth → (targets, classes) probabilities of a probe refitted at that depth (config.all_depths)."""


# Fits already made, by a digest of everything they depend on. An audit re-fits the same probe on identical
# activations often: an output-only edit leaves the residual stream bit-for-bit the base's, and the oracle is
# attacked once per compared method. The fit is deterministic, so a hit returns what the fit would.
_FIT_CACHE: OrderedDict[str, ProbeFit] = OrderedDict()
_FIT_CACHE_SIZE = 128


def _fit_digest(acts_train: Any, labels: Sequence[Any], groups: Sequence[Any], acts_target: Any,
                depths: Sequence[int], relation_id: str, config: RefitProbeConfig) -> str:
    digest = hashlib.sha256()
    for acts in (acts_train, acts_target):
        array = acts.detach().cpu().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts)
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(repr((list(map(str, labels)), list(map(str, groups)), list(depths), relation_id,
                        config)).encode())
    return digest.hexdigest()


def fit_relation_probe(acts_train: torch.Tensor | np.ndarray, labels: Sequence[Any], groups: Sequence[Any],
                       acts_target: torch.Tensor | np.ndarray, depths: Sequence[int], relation_id: str = "",
                       config: RefitProbeConfig = RefitProbeConfig()) -> ProbeFit:
    """Choose depth and C by nested held-out-group CV on the training rows, refit, and score the target rows.

    `acts_*` are (depth, n, d) with rows of `depths`; `groups` are the training subjects. Identical inputs
    return a copy of the earlier fit (`_FIT_CACHE`).
    """
    key = _fit_digest(acts_train, labels, groups, acts_target, depths, relation_id, config)
    if key in _FIT_CACHE:
        _FIT_CACHE.move_to_end(key)
        return copy.deepcopy(_FIT_CACHE[key])
    fit = _fit_relation_probe(acts_train, labels, groups, acts_target, depths, relation_id, config)
    _FIT_CACHE[key] = copy.deepcopy(fit)
    while len(_FIT_CACHE) > _FIT_CACHE_SIZE:
        _FIT_CACHE.popitem(last=False)
    return fit


def _fit_relation_probe(acts_train: torch.Tensor | np.ndarray, labels: Sequence[Any], groups: Sequence[Any],
                        acts_target: torch.Tensor | np.ndarray, depths: Sequence[int], relation_id: str,
                        config: RefitProbeConfig) -> ProbeFit:
    from locate.probes import fit_probe, probe_accuracy_per_layer

    labels = np.asarray(labels, dtype=object)
    curve = probe_accuracy_per_layer(acts_train, labels, groups, seed=config.seed, n_splits=config.n_splits,
                                     max_iter=config.max_iter, nested_cv=True, C_grid=config.C_grid,
                                     inner_splits=config.inner_splits, depths=depths, n_jobs=config.n_jobs,
                                     standardize=config.standardize)
    index = curve.best_index
    binary = curve.n_classes == 2
    flipped = binary and curve.accuracy[index] < 0.5
    def probs_at(row: int, flip: bool) -> tuple[np.ndarray, list[Any]]:
        probe = fit_probe(acts_train[row], labels, seed=config.seed, C=curve.chosen_C[row], max_iter=config.max_iter,
                          standardize=config.standardize)
        target = acts_target[row]
        target = target.double().numpy() if isinstance(target, torch.Tensor) else np.asarray(target, np.float64)
        probs = _softmax_probs(probe, target)
        return (probs[:, ::-1] if flip else probs), list(probe.classes)

    probs, classes = probs_at(index, flipped)
    by_depth = {}
    if config.all_depths:
        for row, depth in enumerate(depths):
            by_depth[int(depth)] = probs if row == index else \
                probs_at(row, binary and curve.accuracy[row] < 0.5)[0]
    accuracy = curve.accuracy[index]
    summary = RelationProbe(relation_id=relation_id, depth=int(depths[index]), C=curve.chosen_C[index],
                            position=config.position,
                            cv_accuracy=max(accuracy, 1 - accuracy) if binary else accuracy,
                            chance=curve.chance[index], flipped=flipped, n_train=len(labels),
                            n_classes=curve.n_classes, curve=list(curve.accuracy))
    return ProbeFit(probs=probs, classes=classes, summary=summary, probs_by_depth=by_depth)


def refit_probe_scores(handle: Any, targets: Sequence[Fact], train_pool: Sequence[Fact],
                       config: RefitProbeConfig = RefitProbeConfig()) -> ProbeOutcome:
    """Fit a fresh probe per relation on `train_pool` (other subjects) and score each target on `handle`."""
    from locate.activations import collect_residuals, n_depths

    target_subjects = {f.subject for f in targets}
    pool = [f for f in train_pool if f.subject not in target_subjects]
    assert not {f.case_id for f in pool} & {f.case_id for f in targets}, "a target is in the probe's training set"
    depths = check_depths("probe", "depths", config.depths, handle) if config.depths is not None \
        else list(range(n_depths(handle)))
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for fact in targets:
        by_relation[fact.relation_id].append(fact)
    outcome = ProbeOutcome()
    for relation, rel_targets in by_relation.items():
        train = [f for f in pool if f.relation_id == relation]
        labels = [f.target_true for f in train]
        if len(train) < 2 * config.n_splits or len(set(labels)) < 2:
            raise ValueError(f"re-fit probe: relation {relation!r} has {len(train)} training facts with "
                             f"{len(set(labels))} answers outside the targets; give more facts of that relation.")
        fits = []
        for position in (("subject", "last") if config.position == "best" else (config.position,)):
            acts_train = collect_residuals(handle, [f.text for f in train],
                                           positions=_positions(handle, train, position), layers=depths)
            acts_target = collect_residuals(handle, [f.text for f in rel_targets],
                                            positions=_positions(handle, rel_targets, position), layers=depths)
            fits.append(fit_relation_probe(acts_train, labels, [f.subject for f in train], acts_target, depths,
                                           relation, replace(config, position=position)))
        for every in fits:
            for depth, probs in every.probs_by_depth.items():
                scores = outcome.sites.setdefault(site_name(depth, every.summary.position), {})
                for row, fact in enumerate(rel_targets):
                    known = fact.target_true in every.classes
                    scores[fact.case_id] = float(probs[row, every.classes.index(fact.target_true)]) if known else 0.0
        fit = max(fits, key=lambda f: f.summary.cv_accuracy)  # chosen on training subjects only
        outcome.probes[relation] = fit.summary
        for row, fact in enumerate(rel_targets):
            known = fact.target_true in fit.classes
            p = float(fit.probs[row, fit.classes.index(fact.target_true)]) if known else 0.0
            rank = int((fit.probs[row] > p).sum()) + 1 if known else len(fit.classes) + 1
            outcome.scores[fact.case_id] = TargetScore(
                fact.case_id, p, p, bool(known and rank == 1), rank,
                {"relation_id": relation, "depth": fit.summary.depth, "position": fit.summary.position,
                 "predicted": fit.classes[int(fit.probs[row].argmax())], "answer_in_training_labels": known,
                 "flipped": fit.summary.flipped})
    return outcome


def probe_pool(all_facts: Sequence[Fact], targets: Sequence[Fact], known_by: Any | None = None) -> list[Fact]:
    """Facts of the targets' relations whose subjects are not targets' subjects (the probe's training pool).

    With `known_by` (a handle, normally the base model), only facts it recalls (top-1) are kept: an answer the
    model never produced is not in its activations, so it only adds label noise to the probe.
    """
    relations = {f.relation_id for f in targets}
    subjects = {f.subject for f in targets}
    pool = [f for f in all_facts if f.relation_id in relations and f.subject not in subjects]
    if known_by is not None and pool:
        from obliviate.metrics import top1_correct

        hits = top1_correct(known_by, [f.text for f in pool], [f.target_true for f in pool])
        pool = [f for f, hit in zip(pool, hits) if hit]
    return pool


def run_refit_probe(base: Any, edited: Any, facts: Sequence[Fact], train_pool: Sequence[Fact],
                    oracle: Any | None = None, config: RefitProbeConfig = RefitProbeConfig()) -> AttackResult:
    """Re-fit-probe attack on `edited` (and the same on `oracle`); `train_pool`: other facts of the relations."""
    def one(handle: Any, before, unlearned, nested: AttackResult | None) -> AttackResult:
        start = time.perf_counter()
        outcome = refit_probe_scores(handle, facts, train_pool, config)
        result = assemble("probe", "a fresh held-out-subject probe's probability of the true answer",
                          asdict(config), facts, attacked=outcome.scores, unlearned=unlearned, before=before,
                          oracle=nested, timings={"total": time.perf_counter() - start}, handle_name=handle.name,
                          min_gap=config.min_gap)
        result.sites = outcome.sites
        for relation, probe in outcome.probes.items():
            result.metrics[f"cv_accuracy_{relation}"] = probe.cv_accuracy
            result.metrics[f"chance_{relation}"] = probe.chance
            result.metrics[f"depth_{relation}"] = float(probe.depth)
        result.config["relation_probes"] = {r: asdict(p) for r, p in outcome.probes.items()}
        return result

    return with_oracle(base, edited, oracle, facts, one)


@ATTACKS.register("probe", RefitProbeConfig)
def refit_probe_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: RefitProbeConfig, ctx: AttackContext
                       ) -> AttackResult:
    """Re-fit probe: a fresh probe trained on other subjects reads the answer from the hidden states."""
    return run_refit_probe(base, edited, facts, probe_pool(ctx.pool_facts, facts), ctx.oracle, cfg)
