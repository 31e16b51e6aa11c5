"""Calibrating the auditor on three cases whose truth is known, before trusting its verdicts on real edits.

On the world's forget split (the facts ``world`` learned and ``world-retain`` never saw):

- **erased**: ``world-retain`` itself — the never-learned oracle, the gold standard of unlearning;
- **suppressed**: ``world`` with an output-only suppression (edit/suppress.py: a LogitPenalty on the answers'
  first tokens, or a late steering hook subtracting their unembedding directions) — the fact is all there inside;
- **intact**: ``world`` untouched.

Each case is attacked with the same attacks and judged by audit/verdict.py against the oracle; the confusion
matrix (rows: truth, columns: verdict) must be ≥ 95% on its diagonal in every row (tests/test_calibrate.py
asserts it). Only facts with a known truth are used: those ``world`` answers top-1 and ``world-retain`` does not
(a fact the oracle also answers is guessable from the rest of the world, so neither "erased" nor "intact" is
a statement about this fact's knowledge).

Two caveats, stated because they limit what the matrix proves. With the oracle as its own reference, the erased
row compares identical scores and is right by construction for any margin ≥ 0 (the attacks here are deterministic);
the non-trivial rows are suppressed (is some attack strong enough, and the margin small enough?) and the
oracle-free variant (`oracle_free=True`: the absolute-threshold rule used where no oracle exists, which must call
``world-retain`` erased on its own scores). The margin's robustness is measured by re-judging the same attack scores
over a grid of margins and spread factors, and each attack alone shows which attacks the calibration needs.

The margins come from more than one never-taught model (`peer`, on by default): the paired spread between the
oracle and ``world-retain-2`` (the oracle's recipe from another seed) on the same targets — the paired difference
an erased edited model shows against the oracle (audit/verdict.py explains the rule). The summary prints both
margins (with the peer, and from the oracle's spread alone). A wider set of known cases — weights-level suppressions
an owner could build, and perturbed oracles and bases — is the zoo (audit/zoo.py,
``obliviate audit --calibrate --zoo``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from audit.verdict import (VERDICTS, AttackScores, NullAnswers, VerdictConfig, judge,
                           null_fact_draws, null_of_draws, recalled_targets)
from obliviate.facts import Fact

CASES = ("erased", "suppressed", "intact")

FAST_PROBE: dict[str, Any] = {"C_grid": (1.0,), "n_splits": 3, "inner_splits": 2}
"""The calibrations' probe: one C and three folds instead of four Cs and five. The verdict reads the probe at every
depth and position, so the grid only moves its headline depth; measured on the three-case calibration, the same
confusion matrices with and without the oracle at 49 s instead of 158 s (the probe alone: suppressed row 0.96
against 0.95)."""


@dataclass(frozen=True)
class CalibrationConfig:
    """What the calibration runs and how it is judged."""

    attacks: tuple[str, ...] = ("logit_lens", "probe")
    """Registered attacks to run (cheap ones: the calibration must stay within a minute or two on 2 cores)."""
    attack_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {"probe": dict(FAST_PROBE)})
    """Per attack name, its config fields (as `audit.attacks` params); the probe's default is `FAST_PROBE`."""
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    """The verdict rule under test (margin floor and spread factor)."""
    suppression: str = "logit"
    """edit/suppress.py kind for the suppressed case: logit (LogitPenalty) or unembed (late steering hook)."""
    penalty: float = 20.0
    """Suppression strength in nats."""
    limit: int | None = None
    """At most this many forget facts (None = all with a known truth)."""
    margins: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
    """Margin floors swept for the robustness table."""
    spread_ks: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0)
    """Spread factors swept for the robustness table."""
    null: bool = True
    """Also judge without the oracle against a null of answers the audited model never held (two more runs per
    attack)."""
    null_answers: NullAnswers = "decoy"
    """The null's answers (audit/verdict.py `null_facts`): "decoy" (another answer of the relation, drawn as the
    true answers are) or "counterfactual" (CounterFact's target_new, which a rewrite or DPO promotes)."""
    null_draws: int = 2
    """Draws of decoys for that null (seeds seed … seed + k − 1), read as one (audit/verdict.py `DecoyNull`); the
    audit stage's default (`audit.null_draws`). One for the counterfactual null, which no seed changes."""
    peer: str | None = "world-retain-2"
    """The second never-taught model whose paired spread from the oracle sets each attack's margin (audit/verdict.py
    `peers`; audit/zoo.py `peer_model`): a model name, "finetuned", or None. One more run per attack."""
    seed: int = 0
    """World seed."""
    show_progress: bool = False
    """Progress bars."""

    def __post_init__(self) -> None:
        from obliviate.config.loader import check_choices, check_range

        check_range("null_draws", self.null_draws, minimum=1)
        check_choices(self)


@dataclass
class Confusion:
    """Rows: the truth; columns: the verdict; plus the diagonal share per row."""

    counts: dict[str, dict[str, int]]

    @property
    def row_accuracy(self) -> dict[str, float]:
        return {truth: (row[truth] / total if (total := sum(row.values())) else float("nan"))
                for truth, row in self.counts.items()}

    @property
    def min_row_accuracy(self) -> float:
        return min(self.row_accuracy.values())

    def table(self) -> str:
        """The matrix as aligned text."""
        lines = ["truth / verdict".ljust(16) + "".join(f"{v:>12}" for v in VERDICTS) + f"{'row acc':>10}"]
        for truth, row in self.counts.items():
            lines.append(f"{truth:<16}" + "".join(f"{row[v]:>12}" for v in VERDICTS)
                         + f"{self.row_accuracy[truth]:>10.3f}")
        return "\n".join(lines)


@dataclass
class CalibrationResult:
    """The calibration's confusion matrix, the margins behind it, how robust they are, and what it cost."""

    confusion: Confusion
    without_oracle: dict[str, Confusion]
    """The same cases judged without the oracle: "null" (a null of unheld answers on the audited model) and
    "absolute" (the stated threshold) — the rules used where no oracle exists."""
    margins: dict[str, float]
    """Margin per attack the verdicts used."""
    single_oracle_margins: dict[str, float]
    """Margin per attack from the oracle's spread over targets alone (equal to `margins` without a peer)."""
    robustness: list[dict[str, Any]]
    """Per (margin floor, spread_k): each row's accuracy."""
    per_attack: dict[str, dict[str, float]]
    """Row accuracies with each attack alone."""
    case_ids: list[int]
    n_forget: int
    """Forget facts before the known-truth filter."""
    verdicts: dict[str, list[dict[str, Any]]]
    """Per case: per-target verdict records."""
    attack_means: dict[str, dict[str, float]]
    """Per case, per attack: mean recovered score."""
    config: dict[str, Any]
    timings: dict[str, float]

    @property
    def passed(self) -> bool:
        return self.confusion.min_row_accuracy >= 0.95

    def summary(self) -> str:
        lines = [self.confusion.table(), "", f"targets: {len(self.case_ids)} (of {self.n_forget} forget facts)",
                 "margins: " + ", ".join(f"{a} {m:.3f} (one oracle {self.single_oracle_margins[a]:.3f})"
                                         for a, m in self.margins.items()),
                 *(f"without the oracle ({kind}):\n{matrix.table()}" for kind, matrix in self.without_oracle.items()),
                 "each attack alone (row accuracy erased / suppressed / intact): "
                 + "; ".join(f"{a}: " + " / ".join(f"{acc[c]:.2f}" for c in CASES)
                             for a, acc in self.per_attack.items()),
                 "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"confusion": self.confusion.counts, "row_accuracy": self.confusion.row_accuracy,
                "without_oracle": {k: m.counts for k, m in self.without_oracle.items()},
                "without_oracle_row_accuracy": {k: m.row_accuracy for k, m in self.without_oracle.items()},
                "passed": self.passed, "margins": self.margins, "single_oracle_margins": self.single_oracle_margins,
                "robustness": self.robustness,
                "per_attack": self.per_attack, "case_ids": self.case_ids, "n_forget": self.n_forget,
                "verdicts": self.verdicts, "attack_means": self.attack_means, "config": self.config,
                "timings": self.timings}


AttackRunner = Callable[[Any, Any, Sequence[Fact]], AttackScores]
"""(base, attacked handle, targets) → scores on the attacked handle."""


def attack_runner(name: str, probe_facts: Sequence[Fact] = (), params: Mapping[str, Any] | None = None
                  ) -> AttackRunner:
    """The registered attack of that name (`obliviate.registry.ATTACKS`, as the audit stage runs it), as
    (base, handle, targets) → AttackResult without an oracle.

    `probe_facts`: the facts the re-fit probe and relearning may train on (other subjects of the targets' relations).
    """
    from audit.attack_result import AttackContext, run_attack
    from obliviate.registry import ATTACKS

    entry = ATTACKS.get(name)
    if entry.needs:
        raise ValueError(f"calibration attack {name!r} needs {', '.join(entry.needs)}; calibrate with one of "
                         f"{', '.join(e.name for e in ATTACKS if not e.needs)}.")
    cfg = entry.params(params, where=f"calibration.attacks.{name}")
    context = AttackContext(pool_facts=probe_facts, retain_facts=probe_facts)
    return lambda base, handle, facts: run_attack(name, base, handle, facts, cfg, context)


def known_truth_facts(world, oracle, facts: Sequence[Fact]) -> list[Fact]:
    """The facts `world` answers top-1 and the oracle does not: the only ones whose truth is known."""
    by_world = recalled_targets(world, facts)
    by_oracle = recalled_targets(oracle, facts)
    return [f for f in facts if by_world[f.case_id] and not by_oracle[f.case_id]]


def calibration_inputs(world=None, oracle=None, facts: Sequence[Fact] | None = None,
                       probe_facts: Sequence[Fact] | None = None, *, seed: int = 0, show_progress: bool = False
                       ) -> tuple[Any, Any, Sequence[Fact], Sequence[Fact]]:
    """(world, oracle, forget facts, retain facts), each the loaded ``world`` / ``world-retain`` / the world's
    forget / retain split unless given; a ReferenceMismatchError when the two models do not share a tokenizer."""
    from audit.attack_result import check_oracle_tokenizer
    from obliviate.targets import resolve_facts

    if world is None or oracle is None:
        from obliviate.models import load

        world = world or load("world", show_progress=show_progress)
        oracle = oracle or load("world-retain", show_progress=show_progress)
    facts = resolve_facts("world", split="forget", seed=seed) if facts is None else facts
    probe_facts = resolve_facts("world", split="retain", seed=seed) if probe_facts is None else probe_facts
    check_oracle_tokenizer(world, oracle)
    return world, oracle, facts, probe_facts


def calibration_targets(world, oracle, facts: Sequence[Fact], limit: int | None) -> list[Fact]:
    """The first `limit` facts of known truth (`known_truth_facts`); a ValueError when there is none."""
    kept = known_truth_facts(world, oracle, facts)[:limit]
    if not kept:
        raise ValueError("calibration: no forget fact is answered by world and missed by world-retain; "
                         "the world models are not trained as expected.")
    return kept


def suppressed_handle(world, facts: Sequence[Fact], kind: str = "logit", penalty: float = 20.0):
    """`world` with edit/suppress.py's output-only suppression of the facts' answers (a copy; `world` untouched)."""
    from audit.attack_result import clone_tl, with_tl
    from edit.suppress import SuppressConfig, suppression_interventions

    hooks = suppression_interventions(world, facts, SuppressConfig(kind=kind, penalty=penalty))
    tl = clone_tl(world.tl)
    for hook in hooks:
        tl.add_perma_hook(hook.hook_name, hook)
    return replace(with_tl(world, tl), name=f"{world.name}+suppress-{kind}", interventions=list(hooks))


def confusion_of(case_verdicts: Mapping[str, Mapping[int, str]]) -> Confusion:
    """Count verdicts per true case."""
    counts = {truth: {v: 0 for v in VERDICTS} for truth in case_verdicts}
    for truth, verdicts in case_verdicts.items():
        for verdict in verdicts.values():
            counts[truth][verdict] += 1
    return Confusion(counts)


def judge_cases(case_ids: Sequence[int], recalled: Mapping[str, Mapping[int, bool]],
                scores: Mapping[str, Sequence[AttackScores]], oracle: Sequence[AttackScores] | None,
                config: VerdictConfig, null: Mapping[str, Mapping[str, AttackScores]] | None = None,
                peers: Sequence[Sequence[AttackScores]] = ()) -> dict[str, dict[int, str]]:
    """Verdicts of every case under one rule (no attack is re-run); `null` is per case, per attack; `peers` as
    audit/verdict.py `judge` takes them (with an oracle only)."""
    return {case: {t.case_id: t.verdict for t in judge(case_ids, recalled[case], scores[case], oracle,
                                                      null=null[case] if null else None, config=config,
                                                      peers=peers if oracle is not None else ()).targets}
            for case in CASES}


def calibrate(world=None, oracle=None, facts: Sequence[Fact] | None = None,
              probe_facts: Sequence[Fact] | None = None, config: CalibrationConfig = CalibrationConfig(),
              runners: Mapping[str, AttackRunner] | None = None) -> CalibrationResult:
    """Run the auditor on the three known cases and return the confusion matrix (see the module docstring).

    `world` / `oracle` default to the loaded ``world`` / ``world-retain``; `facts` to the world's forget split;
    `probe_facts` (what the re-fit probe trains on: facts both models know) to its retain split.
    `runners` overrides how each attack is run (tests use it to inject attacks).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    world, oracle, facts, probe_facts = calibration_inputs(world, oracle, facts, probe_facts, seed=config.seed,
                                                           show_progress=config.show_progress)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    kept = calibration_targets(world, oracle, facts, config.limit)
    case_ids = [f.case_id for f in kept]
    handles = {"erased": oracle, "suppressed": suppressed_handle(world, kept, config.suppression, config.penalty),
               "intact": world}
    recalled = {case: recalled_targets(h, kept) for case, h in handles.items()}
    timings["select"] = time.perf_counter() - start

    runners = dict(runners or {})
    scores: dict[str, list[AttackScores]] = {case: [] for case in CASES}
    for name in config.attacks:
        run = runners.get(name) or attack_runner(name, probe_facts, config.attack_params.get(name))
        for case, handle in handles.items():
            began = time.perf_counter()
            scores[case].append(run(world, handle, kept))
            timings[f"{name}:{case}"] = time.perf_counter() - began
    oracle_scores = scores["erased"]
    peers: list[list[AttackScores]] = []
    if config.peer:
        from audit.zoo import ZooConfig, ZooInputs, peer_model

        began = time.perf_counter()
        peer = peer_model(ZooInputs(world, oracle, kept, probe_facts, ZooConfig(seed=config.seed)), config.peer,
                          seed=config.seed + 1)
        peers = [[(runners.get(name) or attack_runner(name, probe_facts, config.attack_params.get(name)))(
            world, peer, kept) for name in config.attacks]]
        timings["peer"] = time.perf_counter() - began
    null: dict[str, dict[str, AttackScores]] = {}
    if config.null:
        # each audited model's own unheld answers (audit/verdict.py `null_facts`). Every intact-case target is still
        # recalled, and judge never reads the null of a recalled target: that case reuses the suppressed one's.
        for case in ("erased", "suppressed"):
            null[case] = {}
            draws = null_fact_draws(kept, [*facts, *probe_facts], config.null_answers, config.seed, handles[case],
                                    config.null_draws)
            for name in config.attacks:
                began = time.perf_counter()
                run = runners.get(name) or attack_runner(name, probe_facts, config.attack_params.get(name))
                null[case][name] = null_of_draws(name, [run(world, handles[case], unheld) for unheld in draws])
                timings[f"{name}:null:{case}"] = time.perf_counter() - began
        null["intact"] = null["suppressed"]

    verdict_config = config.verdict
    final = {case: judge(case_ids, recalled[case], scores[case], oracle_scores, config=verdict_config, peers=peers)
             for case in CASES}
    confusion = confusion_of({c: {t.case_id: t.verdict for t in v.targets} for c, v in final.items()})
    without_oracle = {"absolute": confusion_of(judge_cases(case_ids, recalled, scores, None, verdict_config))}
    if null:
        without_oracle["null"] = confusion_of(judge_cases(case_ids, recalled, scores, None, verdict_config, null))

    robustness = []
    for margin in config.margins:
        for spread_k in config.spread_ks:
            rule = replace(verdict_config, margin=margin, spread_k=spread_k)
            matrix = confusion_of(judge_cases(case_ids, recalled, scores, oracle_scores, rule, peers=peers))
            robustness.append({"margin": margin, "spread_k": spread_k, **matrix.row_accuracy,
                               "min_row_accuracy": matrix.min_row_accuracy})
    per_attack = {}
    for index, name in enumerate(config.attacks):
        alone = {case: [scores[case][index]] for case in CASES}
        per_attack[name] = confusion_of(judge_cases(case_ids, recalled, alone, [oracle_scores[index]],
                                                    verdict_config, peers=[[p[index]] for p in peers])).row_accuracy
    timings["total"] = sum(v for k, v in timings.items())
    attack_means = {case: {s.attack: sum(s.recovered[c] for c in case_ids) / len(case_ids) for s in scores[case]}
                    for case in CASES}
    return CalibrationResult(
        confusion=confusion, without_oracle=without_oracle, margins=final["suppressed"].margins,
        single_oracle_margins=judge(case_ids, recalled["suppressed"], scores["suppressed"], oracle_scores,
                                    config=verdict_config).margins, robustness=robustness,
        per_attack=per_attack, case_ids=case_ids, n_forget=len(facts),
        verdicts={case: v.to_records() for case, v in final.items()}, attack_means=attack_means,
        config={**asdict(config), "verdict": asdict(config.verdict)}, timings=timings)
