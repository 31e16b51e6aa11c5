"""Linear probes on residual activations: a frozen probe type, per-depth accuracy on held-out subjects, and the
attribute probe (which answer a fact has, decoded from its last subject token).

A probe is scikit-learn's StandardScaler + LogisticRegression (the PGA paper's probe, reference
Rupawheatly/MLDU2: C = 1, max_iter = 2000, random_state = 42). Its direction in raw activation space is
w = coef / scaler.scale_, normalised — what PGA projects out; `standardised_direction` is the unit coef in the
scaler's space.

Accuracy per depth is measured on held-out subjects (scikit-learn's GroupKFold with the subject as the group), so
no subject's activations are in both the training and the test fold: the probe must decode the attribute, not
recognise the subject. The chance level is the majority-class baseline on the same folds; |acc − chance| is
reported too, because a probe below chance on paired folds is flipped, and an attacker who flips it recovers the
information (the caution of the PGA paper, Rupawheatly/MLDU2). `nested_cv=True` chooses C by an inner GroupKFold on
each outer training fold (the audit's re-fit attack: a fresh probe whose capacity is tuned without seeing the test
subjects).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from threadpoolctl import threadpool_limits

from obliviate.facts import Fact

C_GRID = (0.01, 0.1, 1.0, 10.0)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class LinearProbe:
    """A fitted StandardScaler + logistic regression, stored as plain tensors (float64)."""

    mean: Float[torch.Tensor, " d"]
    """The scaler's per-feature mean."""
    scale: Float[torch.Tensor, " d"]
    """The scaler's per-feature standard deviation (1 where a feature is constant)."""
    coef: Float[torch.Tensor, "k d"]
    """Logistic-regression weights in standardised space (k = 1 for a binary probe)."""
    intercept: Float[torch.Tensor, " k"]
    classes: tuple[Any, ...]
    """Class labels in scikit-learn's order; a binary probe's positive class is classes[1]."""

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def directions(self) -> Float[torch.Tensor, "k d"]:
        """Unit weight vectors in raw activation space, one per row of coef."""
        raw = self.coef / self.scale
        return raw / raw.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    @property
    def direction(self) -> Float[torch.Tensor, " d"]:
        """The binary probe's unit direction in raw activation space: coef / scale, normalised (PGA's w)."""
        if not self.is_binary:
            raise ValueError(f"a {len(self.classes)}-class probe has one direction per class; use `.directions`.")
        return self.directions[0]

    @property
    def standardised_direction(self) -> Float[torch.Tensor, " d"]:
        """The binary probe's unit coef in the scaler's standardised space."""
        if not self.is_binary:
            raise ValueError(f"a {len(self.classes)}-class probe has one direction per class; use `.coef`.")
        return self.coef[0] / self.coef[0].norm().clamp(min=1e-12)

    def decision_function(self, X: Float[torch.Tensor, "n d"] | np.ndarray) -> np.ndarray:
        """Logits: (n,) for a binary probe (positive means classes[1]), (n, k) otherwise."""
        z = (_numpy(X) - self.mean.numpy()) / self.scale.numpy() @ self.coef.numpy().T + self.intercept.numpy()
        return z[:, 0] if self.is_binary else z

    def predict(self, X: Float[torch.Tensor, "n d"] | np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        index = (z > 0).astype(int) if self.is_binary else z.argmax(-1)
        return np.asarray(self.classes, dtype=object)[index]

    def accuracy(self, X: Float[torch.Tensor, "n d"] | np.ndarray, y: Sequence[Any] | np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y, dtype=object)))

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The probe's tensors (for `obliviate.results.atomic_save_tensors`); classes go in metadata."""
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale, f"{prefix}coef": self.coef,
                f"{prefix}intercept": self.intercept}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], classes: Sequence[Any], prefix: str = "") -> LinearProbe:
        return cls(mean=tensors[f"{prefix}mean"].double(), scale=tensors[f"{prefix}scale"].double(),
                   coef=tensors[f"{prefix}coef"].double(), intercept=tensors[f"{prefix}intercept"].double(),
                   classes=tuple(classes))

    @classmethod
    def from_sklearn(cls, scaler: Any, classifier: Any) -> LinearProbe:
        classes = tuple(c.item() if hasattr(c, "item") else c for c in classifier.classes_)
        d = classifier.coef_.shape[-1]  # an identity scaler (standardize=False) stores neither mean nor scale
        mean = np.zeros(d) if scaler.mean_ is None else scaler.mean_
        scale = np.ones(d) if scaler.scale_ is None else scaler.scale_
        return cls(mean=torch.as_tensor(mean, dtype=torch.float64), scale=torch.as_tensor(scale, dtype=torch.float64),
                   coef=torch.as_tensor(classifier.coef_, dtype=torch.float64),
                   intercept=torch.as_tensor(classifier.intercept_, dtype=torch.float64), classes=classes)


def _classifier(C: float, max_iter: int, seed: int, solver: str = "lbfgs", tol: float = 1e-4) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter, random_state=seed, solver=solver, tol=tol)


def _scaler(standardize: bool) -> Any:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler(with_mean=standardize, with_std=standardize)


def _pipeline(C: float, max_iter: int, seed: int, solver: str = "lbfgs", tol: float = 1e-4, standardize: bool = True):
    from sklearn.pipeline import make_pipeline

    return make_pipeline(_scaler(standardize), _classifier(C, max_iter, seed, solver, tol))


def fit_probe(X: Float[torch.Tensor, "n d"] | np.ndarray, y: Sequence[Any] | np.ndarray, *, seed: int = 42,
              C: float = 1.0, max_iter: int = 2000, solver: str = "lbfgs", tol: float = 1e-4,
              standardize: bool = True) -> LinearProbe:
    """StandardScaler + LogisticRegression(C, max_iter, random_state=seed) fitted on (X, y).

    `solver` / `tol` go to scikit-learn; `solver="newton-cholesky"` with a small `tol` reaches the same objective's
    optimum in a few Newton steps where there are far more samples than features (binary labels only).
    `standardize=False` fits on the raw activations (the probe's mean 0 and scale 1): the penalty then weighs the
    residual's own directions as they are, instead of lifting its low-variance ones to unit variance.
    """
    labels = np.asarray(y)
    if len(np.unique(labels)) < 2:
        raise ValueError("fit_probe needs at least two classes in y.")
    pipe = _pipeline(C, max_iter, seed, solver, tol, standardize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # lbfgs convergence chatter on separable data
        pipe.fit(_numpy(X), labels)
    scaler, classifier = pipe.steps[0][1], pipe.steps[1][1]
    return LinearProbe.from_sklearn(scaler, classifier)


@dataclass
class ProbeCurve:
    """Held-out-subject probe accuracy at each depth."""

    depths: list[int]
    accuracy: list[float]
    """Accuracy pooled over the outer folds (every sample tested exactly once)."""
    accuracy_std: list[float]
    """Standard deviation of the per-fold accuracies."""
    chance: list[float]
    """Majority-class baseline on the same folds (the training fold's most frequent class)."""
    above_chance: list[float]
    """accuracy − chance."""
    abs_above_chance: list[float]
    """|accuracy − chance|: a below-chance probe is recoverable by flipping it."""
    chosen_C: list[float]
    """The C used per depth (the median of the inner-CV choices when nested_cv)."""
    n_samples: int
    n_groups: int
    n_classes: int
    n_splits: int
    nested_cv: bool
    seed: int
    standardize: bool = True
    """Whether each feature was scaled to unit variance before the fit (`fit_probe`)."""

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.abs_above_chance))

    @property
    def best_depth(self) -> int:
        """The depth where the probe is furthest from chance."""
        return self.depths[self.best_index]

    @property
    def best_accuracy(self) -> float:
        return self.accuracy[self.best_index]


def _group_folds(groups: np.ndarray, n_splits: int, seed: int):
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("held-out-subject CV needs at least two distinct subjects (groups).")
    return GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)


def _nested_fit_predict(X_train: np.ndarray, y_train: np.ndarray, g_train: np.ndarray, X_test: np.ndarray, *,
                        seed: int, max_iter: int, C_grid: Sequence[float], inner_splits: int,
                        standardize: bool = True) -> tuple[np.ndarray, float]:
    """Choose C by an inner GroupKFold, refit at it on all of (X_train, y_train), predict X_test.

    What scikit-learn's GridSearchCV over `_pipeline`'s C does, to the bit (tests/test_probes.py holds the two
    equal): per inner fold the scaler is fitted on the fold's training part and one classifier per C; a fit that
    fails (one class in the fold) scores NaN; the best C has the highest mean accuracy over folds, the first of
    the grid on ties, NaN means counted as the worst. Written out because GridSearchCV's cloning, validation and
    scorer cost more than the small lbfgs fits themselves: the refitted-probe audit spent about a third of its
    time there (cProfile on the world's forget split). Each fold's scaler is also fitted once, not once per C, and
    a grid of one C (the demo's and the zoo's fast probe) skips the inner folds, whose choice is then fixed."""
    best = 0 if len(C_grid) == 1 else _inner_cv_best(X_train, y_train, g_train, seed=seed, max_iter=max_iter,
                                                       C_grid=C_grid, inner_splits=inner_splits,
                                                       standardize=standardize)
    refit = _pipeline(C_grid[best], max_iter, seed, standardize=standardize).fit(X_train, y_train)
    return refit.predict(X_test), float(C_grid[best])


def _inner_cv_best(X: np.ndarray, y: np.ndarray, g: np.ndarray, *, seed: int, max_iter: int,
                   C_grid: Sequence[float], inner_splits: int, standardize: bool) -> int:
    """Index in `C_grid` of the highest mean held-out accuracy over an inner GroupKFold (see `_nested_fit_predict`)."""
    inner = list(_group_folds(g, inner_splits, seed).split(X, y, g))
    scores = np.full((len(C_grid), len(inner)), np.nan)
    for j, (fit_rows, score_rows) in enumerate(inner):
        scaler = _scaler(standardize).fit(X[fit_rows])
        X_fit, X_score = scaler.transform(X[fit_rows]), scaler.transform(X[score_rows])
        for i, C in enumerate(C_grid):
            try:
                classifier = _classifier(C, max_iter, seed).fit(X_fit, y[fit_rows])
            except ValueError:  # e.g. one class only in this fold's training part
                continue
            scores[i, j] = np.mean(classifier.predict(X_score) == y[score_rows])
    means = scores.mean(axis=1)
    if np.isnan(means).all():
        return 0
    return int(np.argmax(np.nan_to_num(means, nan=np.nanmin(means) - 1)))


def probe_accuracy_per_layer(
    acts: Float[torch.Tensor, "depth n d"] | np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    *,
    seed: int = 42,
    n_splits: int = 5,
    C: float = 1.0,
    max_iter: int = 2000,
    nested_cv: bool = False,
    C_grid: Sequence[float] = C_GRID,
    inner_splits: int = 3,
    depths: Sequence[int] | None = None,
    show_progress: bool = False,
    n_jobs: int = 1,
    standardize: bool = True,
) -> ProbeCurve:
    """Probe accuracy at each depth with GroupKFold over `groups` (subjects): no group in train and test.

    `labels` may have any number of classes (multiclass logistic regression for attribute decoding).
    `depths` names the rows of `acts` (default 0..depth−1). With `nested_cv`, C is chosen from `C_grid` by an
    inner GroupKFold on each outer training fold. `n_jobs` > 1 fits the depths in that many worker processes
    (joblib; -1 = all cores): the result is the same. `standardize`: as in `fit_probe`.
    """
    X_all = _numpy(acts)
    y = np.asarray(labels)
    g = np.asarray(groups)
    if X_all.ndim != 3 or X_all.shape[1] != len(y) or len(g) != len(y):
        raise ValueError(f"acts {X_all.shape} must be (depth, n, d) with n = len(labels) = len(groups) "
                         f"({len(y)}, {len(g)}).")
    names = list(range(X_all.shape[0])) if depths is None else [int(d) for d in depths]
    folds = list(_group_folds(g, n_splits, seed).split(X_all[0], y, g))
    rows = range(X_all.shape[0])
    if show_progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="probe per depth")
    accuracy, accuracy_std, chance, chosen = [], [], [], []
    chance_hits = sum(int(np.sum(y[test] == _majority(y[train]))) for train, test in folds)
    kwargs = dict(nested_cv=nested_cv, seed=seed, C=C, max_iter=max_iter, C_grid=C_grid, inner_splits=inner_splits,
                  standardize=standardize)
    if n_jobs == 1 or len(rows) == 1:
        per_depth = [_depth_accuracy_1thread(X_all[depth], y, g, folds, **kwargs) for depth in rows]
    else:  # depths are independent: one worker process each
        from joblib import Parallel, delayed

        per_depth = Parallel(n_jobs=n_jobs)(delayed(_depth_accuracy_1thread)(X_all[depth], y, g, folds, **kwargs)
                                            for depth in rows)
    for acc, std, used_C in per_depth:
        accuracy.append(acc)
        accuracy_std.append(std)
        chosen.append(used_C)
        chance.append(chance_hits / len(y))
    above = [a - c for a, c in zip(accuracy, chance)]
    return ProbeCurve(depths=names, accuracy=accuracy, accuracy_std=accuracy_std, chance=chance,
                      above_chance=above, abs_above_chance=[abs(v) for v in above], chosen_C=chosen,
                      n_samples=len(y), n_groups=len(np.unique(g)), n_classes=len(np.unique(y)),
                      n_splits=len(folds), nested_cv=nested_cv, seed=seed, standardize=standardize)


def _depth_accuracy_1thread(*args, **kwargs) -> tuple[float, float, float]:
    with threadpool_limits(limits=1):  # many small fits: BLAS threads only add contention
        return _depth_accuracy(*args, **kwargs)


def _depth_accuracy(X: np.ndarray, y: np.ndarray, g: np.ndarray, folds: list, *, nested_cv: bool, seed: int,
                    C: float, max_iter: int, C_grid: Sequence[float], inner_splits: int,
                    standardize: bool = True) -> tuple[float, float, float]:
    """Pooled held-out accuracy, its per-fold std, and the C used (median inner-CV choice when nested)."""
    hits, fold_acc, fold_C = 0, [], []
    for train, test in folds:
        if len(np.unique(y[train])) < 2:
            predicted = np.full(len(test), _majority(y[train]), dtype=object)
        elif nested_cv:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predicted, chosen_C = _nested_fit_predict(X[train], y[train], g[train], X[test], seed=seed,
                                                          max_iter=max_iter, C_grid=C_grid,
                                                          inner_splits=inner_splits, standardize=standardize)
            fold_C.append(chosen_C)
        else:
            predicted = fit_probe(X[train], y[train], seed=seed, C=C, max_iter=max_iter,
                                  standardize=standardize).predict(X[test])
        correct = np.asarray(predicted, dtype=object) == y[test].astype(object)
        hits += int(correct.sum())
        fold_acc.append(float(correct.mean()))
    return hits / len(y), float(np.std(fold_acc)), float(np.median(fold_C)) if fold_C else float(C)


def _majority(y: np.ndarray) -> Any:
    values, counts = np.unique(y, return_counts=True)
    return values[np.argmax(counts)]


@dataclass
class AttributeProbeResult:
    """Per-depth decoding of a relation's answer from the last subject token, on held-out subjects."""

    relation_id: str | None
    curve: ProbeCurve
    classes: list[str]
    """The answers (target_true values) kept as classes."""
    n_facts: int
    uniform_chance: float
    """1 / number of classes (the majority baseline in `curve.chance` is the stricter one)."""
    position: str = "subject"
    """Where the residual was read: "subject" (last subject token) or "last" (the prompt's last token)."""
    dropped_facts: list[int] = field(default_factory=list)
    """case_ids left out because their answer occurs fewer than `min_class_count` times."""


def attribute_probe(
    handle,
    facts: Sequence[Fact],
    relation_id: str | None = None,
    *,
    seed: int = 42,
    n_splits: int = 5,
    C: float = 1.0,
    max_iter: int = 2000,
    nested_cv: bool = False,
    min_class_count: int = 2,
    position: Literal["subject", "last"] = "subject",
    batch_size: int = 32,
    show_progress: bool = False,
    standardize: bool = True,
) -> AttributeProbeResult:
    """Probe each depth's residual for the fact's answer (target_true), at the last subject token (default: where
    ROME finds attributes enriched) or at the prompt's last token (`position="last"`, where the answer is read out).

    Facts are those of `relation_id` (all given facts when None). Answers seen fewer than `min_class_count`
    times are dropped: an answer no training subject has cannot be decoded, it only adds noise to the curve.
    Folds hold out subjects (GroupKFold by subject). `standardize=False` probes the raw residual (`fit_probe`).
    """
    from locate.activations import collect_residuals, last_subject_token_positions

    chosen = [f for f in facts if relation_id is None or f.relation_id == relation_id]
    counts: dict[str, int] = {}
    for fact in chosen:
        counts[fact.target_true] = counts.get(fact.target_true, 0) + 1
    kept = [f for f in chosen if counts[f.target_true] >= min_class_count]
    dropped = [f.case_id for f in chosen if counts[f.target_true] < min_class_count]
    classes = sorted({f.target_true for f in kept})
    if len(classes) < 2:
        raise ValueError(f"relation {relation_id!r}: {len(kept)} facts with {len(classes)} answer(s) seen at "
                         f"least {min_class_count} times; a probe needs two or more.")
    if position not in ("subject", "last"):
        raise ValueError(f"position={position!r}; use 'subject' or 'last'.")
    positions = last_subject_token_positions(handle, kept) if position == "subject" else "last"
    acts = collect_residuals(handle, [f.text for f in kept], positions=positions, batch_size=batch_size,
                             show_progress=show_progress)
    curve = probe_accuracy_per_layer(acts, [f.target_true for f in kept], [f.subject for f in kept], seed=seed,
                                     n_splits=n_splits, C=C, max_iter=max_iter, nested_cv=nested_cv,
                                     show_progress=show_progress, standardize=standardize)
    return AttributeProbeResult(relation_id=relation_id, curve=curve, classes=classes, n_facts=len(kept),
                                uniform_chance=1.0 / len(classes), position=position, dropped_facts=dropped)
