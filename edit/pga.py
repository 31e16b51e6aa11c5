"""Probe-geometry alignment (PGA): erase the cross-sequence memorisation signature with per-depth projectors.

Paper: "Probe-Geometry Alignment: Erasing the Cross-Sequence Memorization Signature Below Chance"; reference code
Rupawheatly/MLDU2 (MLDU-E notebooks), whose protocol numbers (tolerance 0.55, at most 7 rounds) are below.

At each depth d (0 = embedding, d ≥ 1 = block d − 1's output; `locate.activations.depth_hook_name`) an
inference-time hook applies P = I − U Uᵀ in the STANDARDISED activation space of the memorisation probe
(s = (x − μ)/σ, μ and σ the probe's StandardScaler fitted on M ∪ C). In raw space that is the oblique projection
    x ← x − (x − μ) Mᵀ,   M = diag(σ) U Uᵀ diag(1/σ),
an `obliviate.hooks.AffineErasure` (savable, scoped). M² = M, and Uᵀ(x' − μ)/σ = 0 for every x: a probe whose
standardised weights lie in span(U) sees a constant.

- ``probe`` (k = 1): U = the unit logistic-regression weight of the M-vs-C probe in its standardised space
  (`locate.probes.LinearProbe.standardised_direction`, from `locate.memorisation_probe`).
- ``md`` (MD-PGA, k > 1): U = the top-k eigenvectors by |λ| of Σ_diff = (μ_m − μ_c)(μ_m − μ_c)ᵀ +
  (Σ_m − Σ_c), moments of the standardised M and C activations.
- ``adversarial``: start at rank 1; each round re-extract the activations with the current projectors on, measure
  a re-fitted probe's held-out accuracy at every depth and stop when the largest is below `tolerance` (0.55) or
  after `max_rounds` (7) rounds; otherwise re-fit a probe at every depth, Gram–Schmidt its direction against U (in
  the original standardised space: the new probe's raw weight coef'/σ' times σ) and append it. Published: rank 4,
  max probe 0.79 → 0.48, capability change +0.19 pp.

Held-out accuracy in the rounds is measured on unseen keys (GroupKFold over keys, `n_folds`), which is cheaper
than the full leave-one-out and just as honest; `n_folds=None` uses the leave-one-out itself, and the audit's LOO
probe (`locate.memorisation_probe`) gives the final figure. Caution from the paper: "below chance" on paired folds
means a flipped probe (an attacker who flips the sign gets 1 − acc), so |acc − 0.5| is reported as well, and
`criterion="abs"` makes the stop rule use it.

In a run, the edit stage projects only at the depths where the locate stage's memorisation probe found the
signature (`MemorisationProbeResult.signature_depths`): on a small model, projecting at every depth — embedding
included — costs facts that no signature lives in.

The projectors act at every position of the hooked residual (the paper's hook edits the whole block output); μ and
σ are last-token statistics, as the probe's. The LoRA training variant of the paper is not implemented.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float

from edit.result import EditRequest, EditResult
from obliviate.hooks import AffineErasure, applied
from obliviate.registry import EDITS, Knob, Spec

Acts = Float[torch.Tensor, "depth key context d"]


@dataclass(frozen=True)
class DepthProjector:
    """P = I − U Uᵀ in the standardised space (μ, σ) of one depth."""

    depth: int
    mean: Float[torch.Tensor, " d"]
    scale: Float[torch.Tensor, " d"]
    basis: Float[torch.Tensor, "d k"]
    """U: orthonormal columns in standardised space."""

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def matrix(self) -> Float[torch.Tensor, "d d"]:
        """M = diag(σ) U Uᵀ diag(1/σ), so that x' = x − (x − μ) Mᵀ."""
        u = self.basis.double()
        sigma = self.scale.double()
        return (sigma[:, None] * u) @ (u.T / sigma[None, :])

    def project(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        x64 = x.double()
        return (x64 - (x64 - self.mean.double()) @ self.matrix.T).to(x.dtype)

    def intervention(self) -> AffineErasure:
        from locate.activations import depth_hook_name

        return AffineErasure(depth_hook_name(self.depth), self.matrix.float(), self.mean.float())

    def with_direction(self, direction: Float[torch.Tensor, " d"], tol: float = 1e-6) -> DepthProjector:
        """U with `direction` (standardised space) appended after Gram–Schmidt; unchanged if it lies in span(U)."""
        v = direction.double() / direction.double().norm().clamp(min=1e-30)
        u = self.basis.double()
        for _ in range(2):  # twice: classical Gram–Schmidt loses orthogonality in one pass
            v = v - u @ (u.T @ v)
        norm = v.norm()
        if norm < tol:
            return self
        return DepthProjector(self.depth, self.mean, self.scale, torch.cat([u, (v / norm)[:, None]], dim=1))


def _pooled_scaler(m: Float[torch.Tensor, "n d"], c: Float[torch.Tensor, "n d"]) -> tuple[torch.Tensor, torch.Tensor]:
    """StandardScaler's mean and scale on M ∪ C (population std; 1 where a feature is constant)."""
    x = torch.cat([m, c]).double()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _flat(x: Float[torch.Tensor, "key context d"]) -> Float[torch.Tensor, "n d"]:
    return x.reshape(-1, x.shape[-1])


def _fit(m: Float[torch.Tensor, "n d"], c: Float[torch.Tensor, "n d"], seed: int, C: float, max_iter: int):
    from locate.probes import fit_probe

    X = torch.cat([m, c])
    y = np.r_[np.ones(len(m), dtype=int), np.zeros(len(c), dtype=int)]
    return fit_probe(X, y, seed=seed, C=C, max_iter=max_iter)


def probe_projector(depth: int, m: Float[torch.Tensor, "n d"], c: Float[torch.Tensor, "n d"], *, seed: int = 42,
                    C: float = 1.0, max_iter: int = 2000) -> DepthProjector:
    """Rank-1 PGA at one depth: U = the M-vs-C probe's unit standardised weight; μ, σ = its scaler."""
    probe = _fit(m, c, seed, C, max_iter)
    return DepthProjector(depth, probe.mean, probe.scale, probe.standardised_direction.double()[:, None])


def md_projector(depth: int, m: Float[torch.Tensor, "n d"], c: Float[torch.Tensor, "n d"], k: int) -> DepthProjector:
    """MD-PGA at one depth: U = top-k eigenvectors by |λ| of Σ_diff in the pooled standardised space."""
    if k < 1:
        raise ValueError(f"MD-PGA rank k = {k}; give k ≥ 1.")
    mean, scale = _pooled_scaler(m, c)
    sm, sc = (m.double() - mean) / scale, (c.double() - mean) / scale
    delta = sm.mean(0) - sc.mean(0)
    sigma_diff = torch.outer(delta, delta) + (torch.cov(sm.T, correction=0) - torch.cov(sc.T, correction=0))
    eigenvalues, eigenvectors = torch.linalg.eigh((sigma_diff + sigma_diff.T) / 2)
    order = eigenvalues.abs().argsort(descending=True)[:k]
    return DepthProjector(depth, mean, scale, eigenvectors[:, order])


def heldout_key_accuracy(m: Float[torch.Tensor, "key context d"], c: Float[torch.Tensor, "key context d"], *,
                         n_folds: int | None = 5, seed: int = 42, C: float = 1.0, max_iter: int = 2000) -> float:
    """Accuracy of a fresh M-vs-C probe on keys it never saw (GroupKFold over keys, every sample tested once).

    `n_folds=None` holds out one key at a time: the locate stage's True-LOO (`loo_accuracy`), K fits instead of 5.
    """
    from sklearn.model_selection import GroupKFold

    if n_folds is None:
        from locate.memorisation_probe import loo_accuracy

        return float(loo_accuracy(m.numpy(), c.numpy(), C=C, max_iter=max_iter, seed=seed).mean())
    n_keys, n_ctx, d = m.shape
    X = torch.cat([_flat(m), _flat(c)]).double().numpy()
    y = np.r_[np.ones(n_keys * n_ctx, dtype=int), np.zeros(n_keys * n_ctx, dtype=int)]
    groups = np.r_[np.repeat(np.arange(n_keys), n_ctx), np.repeat(np.arange(n_keys), n_ctx)]
    correct = 0
    folds = GroupKFold(n_splits=min(n_folds, n_keys), shuffle=True, random_state=seed)
    for train, test in folds.split(X, y, groups):
        probe = _fit(torch.from_numpy(X[train][y[train] == 1]), torch.from_numpy(X[train][y[train] == 0]),
                     seed, C, max_iter)
        correct += int((probe.predict(X[test]).astype(int) == y[test]).sum())
    return correct / len(y)


@dataclass
class PGAConfig:
    """Probe-geometry alignment (reference numbers: tolerance 0.55, at most 7 adversarial rounds)."""

    variant: Literal["probe", "md", "adversarial"] = "adversarial"
    """probe: rank-1 probe direction; md: MD-PGA top-k of Σ_diff; adversarial: rank-1 then augmented per round."""
    rank: int = 2
    """k for MD-PGA."""
    depths: list[int] | None = None
    """Depths to project at (0 = embedding); None = every depth 0..n_layers."""
    tolerance: float = 0.55
    """Adversarial stop: the largest held-out probe accuracy over depths is below this."""
    max_rounds: int = 7
    """Adversarial stop: at most this many re-fit rounds."""
    criterion: Literal["accuracy", "abs"] = "accuracy"
    """Stop on max accuracy (the reference) or on max 0.5 + |accuracy − 0.5| (a flipped probe counts as leaking)."""
    n_folds: int | None = 5
    """Key folds of the held-out accuracy measured each round; None = leave one key out (the locate probe's)."""
    max_tokens: int = 96
    """Context + text truncation (the memorisation probe's)."""
    C: float = 1.0
    """Logistic-regression inverse regularisation (reference: 1)."""
    max_iter: int = 2000
    seed: int = 42
    """random_state of the probes (reference: 42)."""

    def validate(self) -> None:
        from obliviate.config.loader import InvalidField

        if self.rank < 1:
            raise InvalidField("rank", "must be ≥ 1.")
        if not 0.5 <= self.tolerance <= 1.0:
            raise InvalidField("tolerance", "must be in [0.5, 1].")
        if self.max_rounds < 0:
            raise InvalidField("max_rounds", "must be ≥ 0.")


@dataclass
class AdversarialTrace:
    """What each adversarial round measured (round r: projectors of rank 1 + r appended directions)."""

    accuracy: list[list[float]] = field(default_factory=list)
    """[round][depth] held-out accuracy of a re-fitted probe under the round's projectors."""
    ranks: list[list[int]] = field(default_factory=list)
    """[round][depth] projector rank in that round."""
    stopped_because: str = ""


Collector = Callable[[list[AffineErasure]], tuple[Acts, Acts]]
"""Given hooks to apply, returns (M, C) activations "depth key context d" read with them on."""


def fit_projectors(m: Acts, c: Acts, depths: Sequence[int], cfg: PGAConfig) -> list[DepthProjector]:
    """The initial projectors from clean activations: rank-1 probe (probe, adversarial) or MD-PGA (md)."""
    projectors = []
    for i, depth in enumerate(depths):
        mi, ci = _flat(m[i]), _flat(c[i])
        if cfg.variant == "md":
            projectors.append(md_projector(depth, mi, ci, cfg.rank))
        else:
            projectors.append(probe_projector(depth, mi, ci, seed=cfg.seed, C=cfg.C, max_iter=cfg.max_iter))
    return projectors


def _stop_score(accuracy: Sequence[float], criterion: str) -> float:
    if criterion == "abs":
        return max(0.5 + abs(a - 0.5) for a in accuracy)
    return max(accuracy)


def adversarial_pga(collect: Collector, projectors: list[DepthProjector], cfg: PGAConfig, *,
                    show_progress: bool = False) -> tuple[list[DepthProjector], AdversarialTrace]:
    """Augment rank-1 projectors round by round until re-fitted probes fall below `cfg.tolerance`."""
    trace = AdversarialTrace()
    rounds = range(cfg.max_rounds + 1)
    if show_progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc="adversarial PGA")
    for round_index in rounds:
        m, c = collect([p.intervention() for p in projectors])
        accuracy = [heldout_key_accuracy(m[i], c[i], n_folds=cfg.n_folds, seed=cfg.seed, C=cfg.C,
                                         max_iter=cfg.max_iter) for i in range(len(projectors))]
        trace.accuracy.append(accuracy)
        trace.ranks.append([p.rank for p in projectors])
        if _stop_score(accuracy, cfg.criterion) < cfg.tolerance:
            trace.stopped_because = f"max probe accuracy below {cfg.tolerance} after {round_index} rounds"
            break
        if round_index == cfg.max_rounds:
            trace.stopped_because = f"{cfg.max_rounds} rounds done"
            break
        updated = []
        for i, projector in enumerate(projectors):
            probe = _fit(_flat(m[i]), _flat(c[i]), cfg.seed, cfg.C, cfg.max_iter)
            # the new probe's functional in the ORIGINAL standardised coordinates: raw weight coef'/σ' times σ
            raw = probe.coef[0].double() / probe.scale.double()
            updated.append(projector.with_direction(raw * projector.scale.double()))
        projectors = updated
    return projectors, trace


def secret_collector(handle: Any, secrets: Sequence[Any], depths: Sequence[int], max_tokens: int = 96,
                     show_progress: bool = False) -> Collector:
    """A Collector over the model: the secrets' M and C last-token residuals after each neutral context."""
    from locate.memorisation_probe import NEUTRAL_CONTEXTS, secret_activations

    def collect(hooks: list[AffineErasure]) -> tuple[Acts, Acts]:
        with applied(handle.tl, hooks):
            acts = secret_activations(handle, secrets, contexts=NEUTRAL_CONTEXTS, max_tokens=max_tokens,
                                      layers=list(depths), show_progress=show_progress)
        return acts.memorised, acts.control

    return collect


def pga_edit(handle: Any, targets: Sequence[Any], retain: Sequence[Any] = (), cfg: PGAConfig | None = None, *,
             layers: Sequence[int] | None = None, show_progress: bool = False) -> EditResult:
    """PGA on the memorisation signature of `targets` (secrets: `locate.memorisation_probe.Secret` or records).

    `retain` is unused (PGA has no retain term; capability is measured afterwards). `layers` (EditConfig.layers)
    restricts the projectors to depths L + 1 (block L's output).
    """
    from locate.activations import n_depths
    from locate.memorisation_probe import Secret

    cfg = cfg or PGAConfig()
    secrets = [Secret.from_record(s) for s in targets]
    if len(secrets) < 2:
        raise ValueError("PGA needs at least two secrets (keys) to fit a memorisation probe.")
    depths = [int(layer) + 1 for layer in layers] if layers else (
        list(cfg.depths) if cfg.depths is not None else list(range(n_depths(handle))))
    start = time.perf_counter()
    collect = secret_collector(handle, secrets, depths, cfg.max_tokens, show_progress)
    m, c = collect([])
    projectors = fit_projectors(m, c, depths, cfg)
    fit_s = time.perf_counter() - start
    metrics: dict[str, Any] = {"depths": depths}
    if cfg.variant == "adversarial":
        projectors, trace = adversarial_pga(collect, projectors, cfg, show_progress=show_progress)
        metrics.update(round_accuracy=trace.accuracy, round_ranks=trace.ranks, stopped_because=trace.stopped_because,
                       final_max_accuracy=max(trace.accuracy[-1]),
                       final_abs_above_chance=[abs(a - 0.5) for a in trace.accuracy[-1]])
    metrics["ranks"] = [p.rank for p in projectors]
    return EditResult(method="pga", interventions=[p.intervention() for p in projectors],
                      targets=[s.key_id for s in secrets], layers=[d - 1 for d in depths],
                      timings={"fit": fit_s, "total": time.perf_counter() - start}, metrics=metrics,
                      config=asdict(cfg))


@EDITS.register("pga", PGAConfig, spec=Spec(layers="any", proposal="signature", knob=Knob(
    "max_rounds", 0, 7, scale="linear", integer=True,
    doc="adversarial rounds (each adds one direction per depth: rank ≤ 1 + rounds)")))
def pga_method(handle: Any, request: EditRequest, cfg: PGAConfig) -> EditResult:
    """PGA on the targets' secrets: at the request's layers, else cfg.depths, else the depths where locate found
    the memorisation signature, else every depth."""
    layers = request.layers or (None if cfg.depths is not None else request.proposed)
    if not layers and cfg.depths is None:
        print("edit: pga: the locate stage found no memorisation signature (add memorisation_probe to "
              "locate.methods); projecting at every depth")
    return pga_edit(handle, request.memorised(), request.retain, cfg, layers=layers or None)
