"""Collateral damage of an edit: what else changed besides the targets, base vs edited.

Three measurements, each taken on the base and on the edited model with the change between them:

- Neighbourhood specificity, NS (CounterFact, Meng et al. 2022; reference kmeng01/rome
  ``experiments/py/eval_utils_counterfact.py``): on the targets' neighbourhood prompts — other subjects that share
  the target's true answer — the share where the true answer still beats the counterfactual one (NS) and the mean
  probability gap (NM). An edit that removes "Paris" for one subject and for its neighbours too has hit the
  answer, not the fact. Neighbours that are other subjects of the same relation (SmolLM2's fact set) are scored
  against their own answers and reported apart (NS / NM same-relation; `obliviate.metrics.neighbours`).
- Recall on retained facts (top-1 of the true answer on the retain split's prompts), and on the targets for
  reference.
- Held-out perplexity on text neither model was trained on (the world's ``filler_heldout.txt``; for other models
  any local text file), a capability check in the spirit of the WMDP / RMU evaluation (Li et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.facts import Fact
from obliviate.metrics import counterfact_scores, perplexity, recall


@dataclass(frozen=True)
class CollateralConfig:
    """What the collateral measurements read."""

    max_heldout_texts: int = 400
    """Held-out texts for perplexity (the first ones of the file; enough for a stable figure on 2 cores)."""
    max_retain_facts: int | None = None
    """Retain facts for recall (None = all)."""


@dataclass
class Change:
    """One figure on the base and the edited model."""

    base: float
    edited: float

    @property
    def delta(self) -> float:
        return self.edited - self.base

    def as_dict(self) -> dict[str, float]:
        return {"base": self.base, "edited": self.edited, "delta": self.delta}


@dataclass
class CollateralReport:
    """Collateral figures, base vs edited (NS/NM in % as CounterFact reports them, recall in [0, 1])."""

    neighborhood_ns: Change
    neighborhood_nm: Change
    retain_recall: Change
    forget_recall: Change
    heldout_perplexity: Change
    n_targets: int
    n_neighborhood_prompts: int
    n_retain: int
    n_heldout_texts: int
    extra: dict[str, Any] = field(default_factory=dict)
    neighborhood_ns_same_relation: Change = field(default_factory=lambda: Change(float("nan"), float("nan")))
    """NS on same-relation neighbours: their own answer against the new one (NaN without such neighbours)."""
    neighborhood_nm_same_relation: Change = field(default_factory=lambda: Change(float("nan"), float("nan")))

    def to_metrics(self) -> dict[str, Any]:
        """Flat figures for a StageRecord's metrics (keys read by audit/report.py)."""
        out: dict[str, Any] = {}
        for name in ("neighborhood_ns", "neighborhood_nm", "neighborhood_ns_same_relation",
                     "neighborhood_nm_same_relation", "retain_recall", "forget_recall", "heldout_perplexity"):
            for part, value in getattr(self, name).as_dict().items():
                out[f"{name}_{part}"] = value
        out.update(n_targets=self.n_targets, n_neighborhood_prompts=self.n_neighborhood_prompts,
                   n_retain=self.n_retain, n_heldout_texts=self.n_heldout_texts)
        return out


def heldout_path(seed: int = 0) -> Path:
    """The default held-out text: the world's filler_heldout.txt (the audit certificate hashes it)."""
    from obliviate.world import ensure_world

    return ensure_world(seed=seed) / "filler_heldout.txt"


def heldout_texts(path: str | Path | None = None, *, seed: int = 0, limit: int | None = None) -> list[str]:
    """Non-empty lines of a held-out text file; default: the world's filler_heldout.txt."""
    path = heldout_path(seed) if path is None else path
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    return lines[:limit] if limit is not None else lines


def sample_facts(facts: Sequence[Fact], n: int | None, seed: int) -> list[Fact]:
    """A seeded sample of `n` facts in their original order (all of them when n is None or ≥ len(facts)).

    Random rather than the first n: fact files are grouped by relation, so a prefix would cover few relations.
    """
    import random

    if n is None or n >= len(facts):
        return list(facts)
    keep = set(random.Random(seed).sample(range(len(facts)), n))
    return [fact for i, fact in enumerate(facts) if i in keep]


def neighbourhood_only(facts: Sequence[Fact]) -> list[Fact]:
    """The facts with their rewrite/paraphrase prompts emptied, so scoring runs the neighbourhood prompts only."""
    from dataclasses import replace

    # counterfact_scores always scores the rewrite prompt; keeping it costs one row per fact and is discarded
    return [replace(f, paraphrase_prompts=()) for f in facts]


def measure_collateral(base, edited, targets: Sequence[Fact], retain: Sequence[Fact], texts: Sequence[str],
                       config: CollateralConfig = CollateralConfig()) -> CollateralReport:
    """NS/NM on the targets' neighbourhoods, recall on retain and targets, held-out perplexity; base vs edited."""
    scored = neighbourhood_only(targets)
    retain = list(retain)[: config.max_retain_facts] if config.max_retain_facts is not None else list(retain)
    texts = list(texts)[: config.max_heldout_texts]
    figures: dict[str, list[float]] = {k: [] for k in ("ns", "nm", "ns_rel", "nm_rel", "retain", "forget", "ppl")}
    for handle in (base, edited):
        cf = counterfact_scores(handle, scored)
        figures["ns"].append(cf.ns)
        figures["nm"].append(cf.nm)
        figures["ns_rel"].append(cf.ns_same_relation)
        figures["nm_rel"].append(cf.nm_same_relation)
        figures["retain"].append(recall(handle, retain))
        figures["forget"].append(recall(handle, targets))
        figures["ppl"].append(perplexity(handle, texts) if texts else float("nan"))
    return CollateralReport(
        neighborhood_ns=Change(*figures["ns"]), neighborhood_nm=Change(*figures["nm"]),
        retain_recall=Change(*figures["retain"]), forget_recall=Change(*figures["forget"]),
        heldout_perplexity=Change(*figures["ppl"]), n_targets=len(targets),
        n_neighborhood_prompts=sum(len(f.neighborhood_prompts) for f in targets), n_retain=len(retain),
        n_heldout_texts=len(texts), neighborhood_ns_same_relation=Change(*figures["ns_rel"]),
        neighborhood_nm_same_relation=Change(*figures["nm_rel"]))
