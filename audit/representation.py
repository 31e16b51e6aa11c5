"""Did the edit change what the layers represent? Per-layer probe accuracy and linear CKA, base vs edited.

Two complementary views of the residual stream at the last prompt token, layer by layer:

- Probe accuracy: a *fresh* linear probe (never the editor's own) is fitted at each depth to decode the targets'
  attribute (the true answer) from the residual; cross-validation folds are grouped by subject, so the probe must
  read the attribute from subjects it never saw rather than memorise subject → label. An edit that erased the
  attribute lowers the edited curve towards chance; an output-only suppression leaves it where the base is.
- Linear CKA (Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations Revisited",
  eq. 5; reference code google-research/google-research ``representation_similarity``):
  CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred X (n × d₁) and Y (n × d₂), the
  same n inputs in the same order. It is 1 for identical representations, invariant to orthogonal transforms and
  isotropic scaling of either side (not to arbitrary invertible maps), and near 0 for independent data when n ≫ d.
  Here X and Y are the base and edited activations on the same prompts, so CKA per layer says where the edit changed the
  geometry.

Activations come from `locate.probes.collect_residuals` (depth 0 = embeddings, depth L = the last block's output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from obliviate.facts import Fact
from obliviate.results import atomic_save_figure


def linear_cka(x: Float[torch.Tensor, "n d1"], y: Float[torch.Tensor, "n d2"]) -> float:
    """Linear CKA between two representations of the same n inputs (Kornblith et al. 2019, eq. 5)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: X has {x.shape[0]} rows and Y {y.shape[0]}; both must hold the same inputs.")
    # float64: the numerator and the norms are sums of n·d² products, cancellation in float32 is visible at d≈500
    x = x.detach().double().reshape(x.shape[0], -1)
    y = y.detach().double().reshape(y.shape[0], -1)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm_x = torch.linalg.matrix_norm(x.T @ x)
    norm_y = torch.linalg.matrix_norm(y.T @ y)
    if norm_x == 0 or norm_y == 0:
        return float("nan")  # a constant representation has no geometry to compare
    return float(cross / (norm_x * norm_y))


def cka_per_layer(base: Float[torch.Tensor, "depth n d"], edited: Float[torch.Tensor, "depth n d"]
                  ) -> Float[torch.Tensor, " depth"]:
    """Linear CKA between base and edited activations at each depth."""
    if base.shape[:2] != edited.shape[:2]:
        raise ValueError(f"cka_per_layer: base {tuple(base.shape)} and edited {tuple(edited.shape)} differ in "
                         f"depth or inputs.")
    return torch.tensor([linear_cka(b, e) for b, e in zip(base, edited)], dtype=torch.float64)


@dataclass(frozen=True)
class RepresentationConfig:
    """Which activations are compared and how the probes are fitted."""

    positions: str = "last"
    """Where the residual is read: "last" (the prompt's last token, where the answer is produced) or "subject"
    (the last subject token, where MLPs enrich the subject with its attributes; Geva et al. 2023)."""
    include_paraphrases: bool = True
    """CKA also reads the targets' paraphrase prompts (more inputs: CKA is unreliable when n ≲ d)."""
    seed: int = 42
    """Probe seed (the PGA reference's random_state)."""
    C: float = 1.0
    """Inverse L2 strength of the logistic-regression probe."""
    batch_size: int = 32
    """Prompts per forward pass."""


@dataclass
class RepresentationComparison:
    """Per depth: fresh-probe accuracy on the targets' attribute (base, edited) and CKA(base, edited)."""

    depths: list[int]
    probe_base: list[float]
    """Accuracy on the targets of probes fitted on the retain facts' activations of the base model."""
    probe_edited: list[float]
    """The same with probes fitted afresh on the edited model's activations."""
    chance: float
    """Majority-class baseline: each relation's most frequent training answer, scored on its targets."""
    cka_targets: list[float]
    """Linear CKA between base and edited activations on the targets' prompts."""
    cka_retain: list[float]
    """The same on retain prompts (the control: an edit should leave them alone)."""
    n_targets_probed: int
    n_cka_targets: int
    n_cka_retain: int
    relations: list[str] = field(default_factory=list)

    def to_metrics(self) -> dict[str, Any]:
        """The figures under the keys audit/report.py plots ("cka" is the targets' CKA)."""
        return {"depths": self.depths, "probe_base": self.probe_base, "probe_edited": self.probe_edited,
                "chance": self.chance, "cka": self.cka_targets, "cka_retain": self.cka_retain,
                "n_targets_probed": self.n_targets_probed, "n_cka_targets": self.n_cka_targets,
                "n_cka_retain": self.n_cka_retain, "relations": self.relations}


def _residuals(handle, facts: Sequence[Fact], config: RepresentationConfig, texts: Sequence[str] | None = None
               ) -> Float[torch.Tensor, "depth n d"]:
    from locate.activations import collect_residuals, last_subject_token_positions

    if texts is not None or config.positions == "last":
        return collect_residuals(handle, list(texts) if texts is not None else [f.text for f in facts],
                                 positions="last", batch_size=config.batch_size)
    if config.positions != "subject":
        raise ValueError(f"positions={config.positions!r}; use 'last' or 'subject'.")
    return collect_residuals(handle, [f.text for f in facts], positions=last_subject_token_positions(handle, facts),
                             batch_size=config.batch_size)


def probe_transfer_accuracy(train_acts: Float[torch.Tensor, "depth n_train d"], train_labels: Sequence[str],
                            test_acts: Float[torch.Tensor, "depth n_test d"], test_labels: Sequence[str], *,
                            seed: int = 42, C: float = 1.0) -> list[int]:
    """Correct test predictions per depth of a probe fitted on the training activations at that depth."""
    from locate.probes import fit_probe

    if len(set(train_labels)) < 2:
        # one answer only: the probe is the constant predictor, which is also the chance baseline
        return [sum(label == train_labels[0] for label in test_labels)] * train_acts.shape[0]
    hits = []
    expected = np.asarray(test_labels, dtype=object)
    for depth in range(train_acts.shape[0]):
        probe = fit_probe(train_acts[depth], list(train_labels), seed=seed, C=C)
        hits.append(int(np.sum(np.asarray(probe.predict(test_acts[depth]), dtype=object) == expected)))
    return hits


def compare_representations(base, edited, targets: Sequence[Fact], retain: Sequence[Fact],
                            config: RepresentationConfig = RepresentationConfig()) -> RepresentationComparison:
    """Probe accuracy per depth on the targets' attribute, base vs edited, and CKA(base, edited) per depth.

    The probes are fresh per model and per relation: fitted on the retain facts of the target's relation (which
    both models should still know) and tested on the targets, whose subjects they never saw; targets whose answer
    no retain fact of the relation has are skipped (a linear probe cannot name an unseen class).
    """
    depths = list(range(int(base.tl.cfg.n_layers) + 1))
    hits = {"base": np.zeros(len(depths)), "edited": np.zeros(len(depths))}
    chance_hits, n_probed, relations = 0, 0, []
    by_relation: dict[str, tuple[list[Fact], list[Fact]]] = {}
    for fact in targets:
        by_relation.setdefault(fact.relation_id, ([], []))[0].append(fact)
    for fact in retain:
        if fact.relation_id in by_relation:
            by_relation[fact.relation_id][1].append(fact)
    for relation, (tests, trains) in by_relation.items():
        seen = {f.target_true for f in trains}
        tests = [f for f in tests if f.target_true in seen]
        if not tests or not trains:
            continue
        relations.append(relation)
        train_labels = [f.target_true for f in trains]
        test_labels = [f.target_true for f in tests]
        majority = max(sorted(seen), key=train_labels.count)
        chance_hits += sum(label == majority for label in test_labels)
        n_probed += len(tests)
        for name, handle in (("base", base), ("edited", edited)):
            hits[name] += probe_transfer_accuracy(_residuals(handle, trains, config), train_labels,
                                                  _residuals(handle, tests, config), test_labels,
                                                  seed=config.seed, C=config.C)
    target_texts = [f.text for f in targets]
    if config.include_paraphrases:
        target_texts += [p for f in targets for p in f.paraphrase_prompts]
    retain_texts = [f.text for f in retain]
    cka_targets = cka_per_layer(_residuals(base, [], config, target_texts),
                                _residuals(edited, [], config, target_texts))
    cka_retain = (cka_per_layer(_residuals(base, [], config, retain_texts),
                                _residuals(edited, [], config, retain_texts))
                  if retain_texts else torch.full((len(depths),), float("nan")))
    denominator = max(n_probed, 1)
    return RepresentationComparison(
        depths=depths, probe_base=(hits["base"] / denominator).tolist() if n_probed else [float("nan")] * len(depths),
        probe_edited=(hits["edited"] / denominator).tolist() if n_probed else [float("nan")] * len(depths),
        chance=chance_hits / denominator if n_probed else float("nan"), cka_targets=cka_targets.tolist(),
        cka_retain=cka_retain.tolist(), n_targets_probed=n_probed, n_cka_targets=len(target_texts),
        n_cka_retain=len(retain_texts), relations=relations)


def plot_representation(comparison: RepresentationComparison, path: str | Path, *, title: str = "") -> Path:
    """Two panels by depth: probe accuracy (base, edited, chance) and CKA(base, edited) on targets and retain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(comparison.depths, comparison.probe_base, "k--", marker="o", ms=3, label="base")
    left.plot(comparison.depths, comparison.probe_edited, marker="o", ms=3, label="edited")
    if comparison.chance == comparison.chance:
        left.axhline(comparison.chance, color="grey", ls=":", label="chance (majority)")
    left.set(xlabel="depth (0 = embeddings)", ylabel="probe accuracy on targets", ylim=(0, 1.02),
             title="Fresh probe: targets' attribute")
    left.legend(fontsize=8)
    right.plot(comparison.depths, comparison.cka_targets, marker="o", ms=3, label="targets")
    right.plot(comparison.depths, comparison.cka_retain, marker="s", ms=3, label="retain")
    right.set(xlabel="depth (0 = embeddings)", ylabel="linear CKA(base, edited)", ylim=(0, 1.02),
              title="Representation similarity")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
