"""A calibration zoo: models of known truth built the way a model owner could build them, to test the auditor on.

audit/calibrate.py checks the auditor on three cases (the never-taught oracle, an output-only logit penalty, the
untouched model). An owner who wants a suppression to pass as an erasure has more ways than a logit penalty, and a
never-taught model can be perturbed in ways the oracle's own spread does not show. Each construction below is a
module-level builder ``(inputs, seed) → handle`` that changes weights on a copy (never `world` or the oracle) and
has a known truth:

- **erased** — never taught the forget facts: ``oracle`` (``world-retain``); ``oracle_finetuned`` (the oracle
  after a short language-model fine-tune on fact-free filler text); ``oracle_noised`` (Gaussian noise on every
  weight).
- **suppressed** — the facts are still in the weights, only their output is hidden: ``logit_penalty`` (edit/
  suppress.py, today's case); (a) ``head_finetune``: only the final norm and unembedding trained to hide the
  answers, so every residual is bit-identical to `world`'s; (b) ``last_mlp_graddiff``: only the last block's MLP
  trained with GradDiff (edit/baselines.py); (c) ``last_block_refusal``: the last block trained to answer one
  fixed one-token word ("refusal"-style); (d) ``dpo``: preference-trained suppression (edit/dpo.py), every weight;
  (e) ``late_dpo``: the same on the last two blocks only, so every residual before them is `world`'s (measured
  with the lenses judged at their best layer only: the targets the auditor missed there relearned faster than in
  never-taught models, audit/relearn_speed.py — held).
- **intact** — ``world``; ``world_finetuned`` and ``world_noised`` (the same perturbations as the oracle's).

Truth per target: a never-taught construction's is "erased"; one whose weights hold the facts is "intact" where
it still answers the target top-1 and "suppressed" where it does not (a suppression that failed to hide a
target left it intact, and a perturbation that knocked a target off top-1 left it held but not produced). A
construction's accuracy is measured on the targets at its nominal truth; the others are counted and shown
(``off-truth``). Note that an intact verdict is read from the output alone, so intact rows test the perturbation
more than the auditor.

The margins come from a second never-taught model (audit/verdict.py, `peers`): ``world-retain-2``, the oracle's
recipe from another seed (or `finetuned_oracle`, the oracle fine-tuned on the retained facts' sentences). The
erased rows are never the margin's own peer: ``oracle_finetuned`` is fine-tuned on filler, ``oracle_noised`` is
noised.
Sizes are small (≤ 40 targets, ≤ 100 steps per builder, the probe with one C and three folds) so the whole zoo
runs in minutes on two cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch

from audit.calibrate import FAST_PROBE
from audit.verdict import (VERDICTS, AttackScores, NullAnswers, VerdictConfig, attack_margins,
                           judge, null_fact_draws, null_of_draws, recalled_targets)
from obliviate.facts import Fact

Truth = Literal["erased", "suppressed", "intact"]


@dataclass(frozen=True)
class ZooConfig:
    """What the zoo builds, how it attacks and judges, and how large it is."""

    constructions: tuple[str, ...] | None = None
    """Constructions to build (None: all of `CONSTRUCTIONS`)."""
    attacks: tuple[str, ...] = ("logit_lens", "base_lens", "tuned_lens", "in_context", "benign_relearn", "relearn",
                                "probe")
    """Registered attacks run on every construction. heldout_relearn is not among the defaults: measured on the
    zoo (before the lenses were judged per layer), it catches the refusal block alone (1.000) but added one target
    to DPO's row (0.475 → 0.500) for one false alarm on the fine-tuned oracle (0.950 → 0.925): the verdict does not
    correct for the number of attacks."""
    attack_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {"probe": dict(FAST_PROBE)})
    """Per attack name, its config fields. The probe runs with one C and three folds (audit/calibrate.py
    `FAST_PROBE`; about 10 s a model instead of a minute): the verdict reads it at every depth and position."""
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    limit: int = 40
    """At most this many forget facts of known truth (audit/calibrate.py `known_truth_facts`)."""
    steps: int = 100
    """Optimiser steps of every fine-tuning builder (the GradDiff / refusal / DPO / head builders stop earlier
    once no target is answered top-1)."""
    head_lr: float = 3e-3
    """Adam learning rate of the head-only fine-tune (a)."""
    edit_lr: float = 5e-3
    """AdamW learning rate of the GradDiff and refusal builders (b, c: one block or one MLP moves)."""
    dpo_lr: float = 1e-3
    """AdamW learning rate of the DPO builders (d: every weight moves; e: the last two blocks)."""
    finetune_lr: float = 1e-4
    """AdamW learning rate of the harmless fine-tunes (oracle / world on filler; the margin's peer on retain)."""
    noise: float = 0.02
    """Weight noise of the noised builders: N(0, (noise × the tensor's rms)²) added to every parameter."""
    refusal_word: str = "secret"
    """The one-token word the refusal builder (c) trains the last block to answer."""
    peer: str | None = "world-retain-2"
    """The second never-taught model whose paired spread from the oracle sets the margins (audit/verdict.py
    `peers`): a model name (default world-retain-2, the oracle's recipe from another seed), "finetuned" (the oracle
    after a short fine-tune on retained facts, `finetuned_oracle`), or None (the oracle's spread alone)."""
    null: bool = True
    """Also judge without the oracle against a null of answers the audited model never held (one more run per
    attack and model)."""
    null_answers: NullAnswers = "decoy"
    """The null's answers (audit/verdict.py `null_facts`): "decoy" (another answer of the relation) or
    "counterfactual" (target_new: the answer the DPO builders prefer, so their null is lifted by construction)."""
    null_draws: int = 2
    """Draws of decoys for the null (seeds seed … seed + k − 1), read as one (audit/verdict.py `DecoyNull`); the
    audit stage's default (`audit.null_draws`, where the choice is measured). One for the counterfactual null,
    which no seed changes."""
    relearn_check_steps: int = 6
    """Steps of the relearning-speed check on the suppressions (audit/relearn_speed.py; 0: skip): how fast the
    targets the auditor calls erased / suppressed relearn, beside the oracle and the peer on the same targets."""
    seed: int = 0
    show_progress: bool = False

    def __post_init__(self) -> None:
        from obliviate.config.loader import InvalidField, check_choices, check_range

        unknown = [n for n in self.constructions or () if n not in CONSTRUCTIONS]
        if unknown:
            raise InvalidField("constructions", f"unknown construction {unknown[0]!r}; known: "
                                                f"{', '.join(CONSTRUCTIONS)}.")
        from obliviate.registry import ATTACKS

        unregistered = [a for a in self.attacks if a not in ATTACKS.names()]
        if unregistered or not self.attacks:
            raise InvalidField("attacks", f"unknown attack {unregistered[0]!r}; registered: "
                                          f"{', '.join(ATTACKS.names())}." if unregistered else "give at least one.")
        check_range("limit", self.limit, minimum=1)
        check_range("steps", self.steps, minimum=1)
        check_range("noise", self.noise, minimum=0)
        check_range("relearn_check_steps", self.relearn_check_steps, minimum=0)
        check_range("null_draws", self.null_draws, minimum=1)
        check_choices(self)

    def names(self) -> tuple[str, ...]:
        return tuple(self.constructions) if self.constructions else tuple(CONSTRUCTIONS)


@dataclass(frozen=True)
class ZooInputs:
    """What every builder may read (never write): the two models, the targets, the retained facts, the sizes."""

    world: Any
    oracle: Any
    targets: Sequence[Fact]
    retain: Sequence[Fact]
    config: ZooConfig = field(default_factory=ZooConfig)


@dataclass(frozen=True)
class FineTune:
    """Settings of a plain fine-tune (the shape audit/relearn.py `fine_tuned_copy` reads)."""

    steps: int
    lr: float
    seed: int
    batch_size: int = 16
    weight_decay: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# Perturbations of a model (truth unchanged)
# --------------------------------------------------------------------------------------------------------------


def harmless_texts(handle: Any, inputs: ZooInputs, text: Literal["retain", "filler"], seed: int,
                   n: int = 256) -> list[str]:
    """Up to `n` texts about no target's subject: the retained facts' sentences or fact-free filler (seeded)."""
    from audit.attack_result import AttackContext
    from audit.benign_relearn import BenignRelearnConfig, benign_texts

    context = AttackContext(retain_facts=inputs.retain)
    return benign_texts(handle, inputs.targets, context, BenignRelearnConfig(text=text, max_texts=n, seed=seed))


def finetuned_copy(handle: Any, texts: Sequence[str], settings: FineTune, name: str) -> Any:
    """`handle` with a copy of its TL model fine-tuned on `texts` (language-model loss); `.hf` is the original."""
    from audit.attack_result import with_tl
    from audit.benign_relearn import lm_fine_tuned_copy

    model, _ = lm_fine_tuned_copy(handle, texts, settings)
    return replace(with_tl(handle, model), name=name)


def finetuned_oracle(inputs: ZooInputs, seed: int = 1, text: Literal["retain", "filler"] = "retain") -> Any:
    """The oracle after a short harmless fine-tune: a second never-taught model for the margins (module doc)."""
    config = inputs.config
    texts = harmless_texts(inputs.oracle, inputs, text, seed)
    return finetuned_copy(inputs.oracle, texts, FineTune(config.steps, config.finetune_lr, seed),
                          f"{inputs.oracle.name}+finetune-{text}-{seed}")


def peer_model(inputs: ZooInputs, peer: str, seed: int) -> Any:
    """The margin's peer: "finetuned" (`finetuned_oracle`) or a model loaded by name, with the oracle's tokenizer."""
    if peer == "finetuned":
        return finetuned_oracle(inputs, seed=seed)
    from audit.attack_result import load_alike

    return load_alike(peer, inputs.oracle)


@torch.no_grad()
def noised_copy(handle: Any, noise: float, seed: int) -> Any:
    """`handle` with a copy of its TL model whose every parameter p gets N(0, (noise × rms(p))²) added (seeded);
    `.hf` is the original."""
    from audit.attack_result import clone_tl, with_tl

    tl = clone_tl(handle.tl)
    generator = torch.Generator().manual_seed(seed)
    for _, param in sorted(tl.named_parameters()):  # sorted: the draw order is the names', not the modules'
        scale = noise * float(param.float().pow(2).mean().sqrt())
        param.add_(scale * torch.randn(param.shape, generator=generator, dtype=torch.float32).to(param))
    return replace(with_tl(handle, tl), name=f"{handle.name}+noise-{noise:g}")


# --------------------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------------------


def build_oracle(inputs: ZooInputs, seed: int) -> Any:
    """The never-taught oracle itself."""
    return inputs.oracle


def build_world(inputs: ZooInputs, seed: int) -> Any:
    """The untouched model."""
    return inputs.world


def build_logit_penalty(inputs: ZooInputs, seed: int) -> Any:
    """edit/suppress.py's LogitPenalty on the answers' first tokens (audit/calibrate.py's suppressed case)."""
    from audit.calibrate import suppressed_handle

    return suppressed_handle(inputs.world, inputs.targets)


def build_oracle_finetuned(inputs: ZooInputs, seed: int) -> Any:
    """The oracle fine-tuned on filler text (not the margin's peer, which is fine-tuned on retained facts)."""
    return finetuned_oracle(inputs, seed=seed, text="filler")


def build_world_finetuned(inputs: ZooInputs, seed: int) -> Any:
    """`world` fine-tuned on filler text, as the oracle is in ``oracle_finetuned``."""
    config = inputs.config
    texts = harmless_texts(inputs.world, inputs, "filler", seed)
    return finetuned_copy(inputs.world, texts, FineTune(config.steps, config.finetune_lr, seed),
                          f"{inputs.world.name}+finetune-filler-{seed}")


def build_oracle_noised(inputs: ZooInputs, seed: int) -> Any:
    """The oracle with weight noise."""
    return noised_copy(inputs.oracle, inputs.config.noise, seed)


def build_world_noised(inputs: ZooInputs, seed: int) -> Any:
    """`world` with weight noise."""
    return noised_copy(inputs.world, inputs.config.noise, seed)


def _retain_sample(inputs: ZooInputs, seed: int, per_target: int = 4) -> list[Fact]:
    """A seeded sample of retained facts (about no target's subject) for the builders' retain terms."""
    import random

    subjects = {f.subject for f in inputs.targets}
    pool = [f for f in inputs.retain if f.subject not in subjects]
    return random.Random(seed).sample(pool, min(len(pool), per_target * len(inputs.targets)))


def _first_tokens(handle: Any, facts: Sequence[Fact]) -> torch.Tensor:
    return torch.tensor([handle.answer_token(f.target_true) for f in facts])


def build_head_finetune(inputs: ZooInputs, seed: int) -> Any:
    """(a) Only the final norm and unembedding trained to hide the targets' answers: every residual is `world`'s.

    Loss = mean log p(answer | forget prompt) + cross-entropy of the retained answers (GradDiff's two terms on the
    answers' first tokens), Adam on the head's weights only, over the fixed last-position residuals (the head
    cannot change them); stops once no target is answered top-1."""
    from audit.attack_result import clone_tl, with_tl
    from audit.logit_lens_attack import head_logits
    from locate.activations import collect_residuals

    world, config = inputs.world, inputs.config
    retain = _retain_sample(inputs, seed)
    last = world.n_layers
    forget_resid = collect_residuals(world, [f.text for f in inputs.targets], layers=[last])[0]
    retain_resid = collect_residuals(world, [f.text for f in retain], layers=[last])[0] if retain else None
    forget_answers, retain_answers = _first_tokens(world, inputs.targets), _first_tokens(world, retain)
    tl = clone_tl(world.tl)
    head = [*tl.ln_final.parameters(), *tl.unembed.parameters()]
    for param in tl.parameters():
        param.requires_grad_(False)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(head, lr=config.head_lr)
    with torch.enable_grad():
        for param in head:
            param.requires_grad_(True)
        for _ in range(config.steps):
            forget = head_logits(tl, forget_resid).log_softmax(-1)
            if not bool((forget.argmax(-1) == forget_answers).any()):
                break
            loss = forget[torch.arange(len(forget_answers)), forget_answers].mean()
            if len(retain):
                loss = loss + torch.nn.functional.cross_entropy(head_logits(tl, retain_resid), retain_answers)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        for param in head:
            param.requires_grad_(False)
    return replace(with_tl(world, tl), name=f"{world.name}+head-finetune")


def _edited(world: Any, result: Any, name: str) -> Any:
    from edit.baselines import edited_handle

    return replace(edited_handle(world, result), name=name)


def build_last_mlp_graddiff(inputs: ZooInputs, seed: int) -> Any:
    """(b) GradDiff (edit/baselines.py) on the last block's MLP weights only."""
    from edit.baselines import GradDiffConfig, graddiff_edit

    world, config = inputs.world, inputs.config
    cfg = GradDiffConfig(steps=config.steps, lr=config.edit_lr, params="mlp", seed=seed)
    result = graddiff_edit(world, inputs.targets, _retain_sample(inputs, seed), cfg, layers=[world.n_layers - 1])
    return _edited(world, result, f"{world.name}+graddiff-last-mlp")


def build_last_block_refusal(inputs: ZooInputs, seed: int) -> Any:
    """(c) The last block trained (descent, retained answers kept) to answer `refusal_word` to every target."""
    from edit.baselines import GradDiffConfig, descent_forget_loss, finetune_unlearn
    from obliviate.metrics import continuation_ids

    world, config = inputs.world, inputs.config
    word = config.refusal_word
    if len(continuation_ids(world, word)) != 1:
        from obliviate.config.loader import InvalidField

        raise InvalidField("refusal_word", f"{word!r} is {len(continuation_ids(world, word))} tokens under "
                                           f"{world.name}'s tokenizer; give a word it spells as one token.")
    cfg = GradDiffConfig(steps=config.steps, lr=config.edit_lr, params="all", seed=seed)
    result = finetune_unlearn(world, inputs.targets, _retain_sample(inputs, seed), cfg, descent_forget_loss,
                              method="refusal", layers=[world.n_layers - 1],
                              answers=lambda facts: [word] * len(facts))
    return _edited(world, result, f"{world.name}+refusal-{word}")


def _dpo_suppression(inputs: ZooInputs, seed: int, layers: list[int] | None, name: str) -> Any:
    """DPO (edit/dpo.py) on `layers` (None: every weight): each target's counterfactual answer preferred over its
    true one, with the builders' retain sample."""
    from edit.dpo import DPOConfig, dpo_edit

    world, config = inputs.world, inputs.config
    result = dpo_edit(world, inputs.targets, _retain_sample(inputs, seed),
                      DPOConfig(steps=config.steps, lr=config.dpo_lr, seed=seed), layers=layers)
    return _edited(world, result, f"{world.name}+{name}")


def build_dpo(inputs: ZooInputs, seed: int) -> Any:
    """(d) DPO on every weight."""
    return _dpo_suppression(inputs, seed, None, "dpo")


def build_late_dpo(inputs: ZooInputs, seed: int) -> Any:
    """(e) DPO as in (d) on the last two blocks only: every residual up to them is `world`'s (unlike (d), where
    every weight moves), so whatever the first blocks hold about a target is still there."""
    n = inputs.world.n_layers
    return _dpo_suppression(inputs, seed, [n - 2, n - 1], "dpo-last-two-blocks")


Builder = Callable[[ZooInputs, int], Any]


@dataclass(frozen=True)
class Construction:
    name: str
    truth: Truth
    """The nominal truth (per target, a fact-holding construction's is "intact" where it still answers)."""
    build: Builder


CONSTRUCTIONS: dict[str, Construction] = {c.name: c for c in (
    Construction("oracle", "erased", build_oracle),
    Construction("oracle_finetuned", "erased", build_oracle_finetuned),
    Construction("oracle_noised", "erased", build_oracle_noised),
    Construction("logit_penalty", "suppressed", build_logit_penalty),
    Construction("head_finetune", "suppressed", build_head_finetune),
    Construction("last_mlp_graddiff", "suppressed", build_last_mlp_graddiff),
    Construction("last_block_refusal", "suppressed", build_last_block_refusal),
    Construction("dpo", "suppressed", build_dpo),
    Construction("late_dpo", "suppressed", build_late_dpo),
    Construction("world", "intact", build_world),
    Construction("world_finetuned", "intact", build_world_finetuned),
    Construction("world_noised", "intact", build_world_noised),
)}
"""Every construction of the zoo, by name, in the order the matrix prints them."""


def construction(name: str) -> Construction:
    """The construction of that name; a ConfigError listing the known ones otherwise."""
    if name not in CONSTRUCTIONS:
        from obliviate.config.loader import ConfigError

        raise ConfigError(f"unknown zoo construction {name!r}; known: {', '.join(CONSTRUCTIONS)}.")
    return CONSTRUCTIONS[name]


def target_truths(nominal: Truth, recalled: Mapping[int, bool]) -> dict[int, Truth]:
    """Per target: "erased" for a never-taught construction, else "intact" if answered top-1, "suppressed" if not."""
    if nominal == "erased":
        return {c: "erased" for c in recalled}
    return {c: ("intact" if hit else "suppressed") for c, hit in recalled.items()}


# --------------------------------------------------------------------------------------------------------------
# The zoo's calibration
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ZooRow:
    """One construction under one rule: its verdict counts on the targets at its nominal truth."""

    truth: Truth
    counts: dict[str, int]
    """Verdict → count, over the targets whose truth is the nominal one."""
    off_truth: int
    """Targets whose truth is not the nominal one (not counted in `counts`; see the module docstring)."""

    @property
    def accuracy(self) -> float:
        total = sum(self.counts.values())
        return self.counts[self.truth] / total if total else float("nan")


def zoo_rows(truths: Mapping[str, Mapping[int, Truth]], nominal: Mapping[str, Truth],
             verdicts: Mapping[str, Mapping[int, str]]) -> dict[str, ZooRow]:
    """Per construction, the verdicts of its targets at its nominal truth."""
    rows = {}
    for name, by_case in verdicts.items():
        counts = {v: 0 for v in VERDICTS}
        kept = [c for c, t in truths[name].items() if t == nominal[name]]
        for c in kept:
            counts[by_case[c]] += 1
        rows[name] = ZooRow(nominal[name], counts, len(truths[name]) - len(kept))
    return rows


def zoo_table(rows: Mapping[str, ZooRow]) -> str:
    """Rows = constructions (with truth), columns = verdicts, then accuracy and off-truth targets."""
    lines = ["construction (truth)".ljust(34) + "".join(f"{v:>11}" for v in VERDICTS) + f"{'acc':>8}{'off':>6}"]
    for name, row in rows.items():
        lines.append(f"{name} ({row.truth})".ljust(34) + "".join(f"{row.counts[v]:>11}" for v in VERDICTS)
                     + f"{row.accuracy:>8.3f}{row.off_truth:>6}")
    return "\n".join(lines)


@dataclass
class ZooResult:
    """The zoo's matrices (with the oracle, and without it), each attack alone, the margins, and the costs."""

    rows: dict[str, ZooRow]
    without_oracle: dict[str, dict[str, ZooRow]]
    """"null" (the null of unheld answers on the audited model) and "absolute" (the stated threshold)."""
    per_attack: dict[str, dict[str, float]]
    """Attack → construction → accuracy with that attack alone (with the oracle)."""
    margins: dict[str, float]
    """Margin per attack the verdicts used (with the peer when `peer`)."""
    single_oracle_margins: dict[str, float]
    """Margin per attack from the oracle's spread over targets alone."""
    recall: dict[str, float]
    """Per construction, the share of targets it answers top-1."""
    relearn_check: dict[str, dict[str, float | None]]
    """Per suppression, the relearning-speed check (audit/relearn_speed.py): mean p_true after relearning the
    targets, over those the auditor (with the oracle) calls erased and suppressed, and the oracle's and the peer's
    on the same targets (keys "erased", "oracle:erased", "peer:erased", "n:erased", and the same for suppressed)."""
    case_ids: list[int]
    config: dict[str, Any]
    timings: dict[str, float]

    def passed(self, with_oracle: float = 0.95, without: float = 0.90) -> bool:
        null = self.without_oracle.get("null", {})
        return (all(r.accuracy >= with_oracle for r in self.rows.values())
                and all(r.accuracy >= without for r in null.values()))

    def summary(self) -> str:
        attacks = list(self.per_attack)
        alone = ["each attack alone (accuracy per construction, with the oracle):",
                 "construction".ljust(22) + "".join(f"{a:>16}" for a in attacks)]
        alone += [name.ljust(22) + "".join(f"{self.per_attack[a][name]:>16.3f}" for a in attacks) for name in self.rows]
        return "\n".join([
            f"with the oracle ({len(self.case_ids)} targets):", zoo_table(self.rows),
            *(f"without the oracle ({kind}):\n{zoo_table(rows)}" for kind, rows in self.without_oracle.items()),
            *alone,
            "margins: " + ", ".join(f"{a} {m:.3f} (one oracle {self.single_oracle_margins[a]:.3f})"
                                    for a, m in self.margins.items()),
            "recall (top-1): " + ", ".join(f"{n} {r:.2f}" for n, r in self.recall.items()),
            *self._relearn_check_lines(),
            "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())])

    def _relearn_check_lines(self) -> list[str]:
        if not self.relearn_check:
            return []
        def cell(check: Mapping[str, float | None], group: str) -> str:
            n = int(check.get(f"n:{group}") or 0)
            if not n:
                return f"{group}: none".ljust(44)
            figures = [check[group], check[f"oracle:{group}"], check.get(f"peer:{group}")]
            return (f"{group} ({n}): " + " / ".join("—" if v is None else f"{v:.3f}" for v in figures)).ljust(44)

        lines = ["relearning-speed check: mean p_true after relearning the targets, on those called erased / "
                 "suppressed (construction / oracle / peer):"]
        lines += [name.ljust(22) + cell(check, "erased") + cell(check, "suppressed")
                  for name, check in self.relearn_check.items()]
        return lines

    def to_dict(self) -> dict[str, Any]:
        def rows(table: Mapping[str, ZooRow]) -> dict[str, Any]:
            return {n: {"truth": r.truth, "counts": r.counts, "accuracy": r.accuracy, "off_truth": r.off_truth}
                    for n, r in table.items()}

        return {"rows": rows(self.rows), "without_oracle": {k: rows(t) for k, t in self.without_oracle.items()},
                "per_attack": self.per_attack, "margins": self.margins,
                "single_oracle_margins": self.single_oracle_margins, "recall": self.recall,
                "relearn_check": self.relearn_check,
                "case_ids": self.case_ids, "config": self.config, "timings": self.timings}


Runner = Callable[[Any, Any, Sequence[Fact]], AttackScores]


def judge_zoo(case_ids: Sequence[int], recalled: Mapping[str, Mapping[int, bool]],
              scores: Mapping[str, Sequence[AttackScores]], oracle: Sequence[AttackScores] | None,
              config: VerdictConfig, *, peers: Sequence[Sequence[AttackScores]] = (),
              null: Mapping[str, Mapping[str, AttackScores]] | None = None) -> dict[str, dict[int, str]]:
    """Per construction, per target, the verdict under one rule (attacks are not re-run). Without an oracle, a
    construction with a `null` entry (per attack, its run on the null's unheld answers) is judged against it (the
    others have every target recalled)."""
    verdicts = {}
    for name, runs in scores.items():
        own_null = None
        if oracle is None and null and name in null:
            own_null = {r.attack: null[name][r.attack] for r in runs}
        verdicts[name] = {t.case_id: t.verdict for t in judge(case_ids, recalled[name], runs, oracle, null=own_null,
                                                              config=config, peers=peers).targets}
    return verdicts


def calibrate_zoo(world=None, oracle=None, facts: Sequence[Fact] | None = None,
                  probe_facts: Sequence[Fact] | None = None, config: ZooConfig = ZooConfig(),
                  runners: Mapping[str, Runner] | None = None) -> ZooResult:
    """Build every construction, attack each with the same attacks, and judge it against the oracle (module doc).

    Inputs default as audit/calibrate.py `calibrate`'s; `runners` overrides how an attack is run (tests)."""
    from audit.calibrate import attack_runner, calibration_inputs, calibration_targets

    timings: dict[str, float] = {}
    start = time.perf_counter()
    world, oracle, facts, probe_facts = calibration_inputs(world, oracle, facts, probe_facts, seed=config.seed,
                                                           show_progress=config.show_progress)
    kept = calibration_targets(world, oracle, facts, config.limit)
    case_ids = [f.case_id for f in kept]
    inputs = ZooInputs(world, oracle, kept, probe_facts, config)
    timings["load"] = time.perf_counter() - start

    handles, nominal = {}, {}
    for name in config.names():
        began = time.perf_counter()
        handles[name], nominal[name] = construction(name).build(inputs, config.seed), construction(name).truth
        timings[f"build:{name}"] = time.perf_counter() - began
    peer = None
    if config.peer:
        began = time.perf_counter()
        peer = peer_model(inputs, config.peer, seed=config.seed + 1)
        timings["build:peer"] = time.perf_counter() - began
    recalled = {name: recalled_targets(h, kept) for name, h in handles.items()}
    truths = {name: target_truths(nominal[name], recalled[name]) for name in handles}

    runners = dict(runners or {})
    run = {name: runners.get(name) or attack_runner(name, probe_facts, config.attack_params.get(name))
           for name in config.attacks}
    began = time.perf_counter()
    oracle_scores = [run[a](world, oracle, kept) for a in config.attacks]
    peers = [[run[a](world, peer, kept) for a in config.attacks]] if peer is not None else []
    scores, null = {}, {}
    for name, handle in handles.items():
        scores[name] = oracle_scores if handle is oracle else [run[a](world, handle, kept) for a in config.attacks]
        if config.null and not all(recalled[name].values()):  # judge reads the null of unrecalled targets only
            draws = null_fact_draws(kept, [*facts, *probe_facts], config.null_answers, config.seed, handle,
                                    config.null_draws)
            runs = {a: tuple(run[a](world, handle, unheld) for unheld in draws) for a in config.attacks}
            null[name] = {a: null_of_draws(a, r) for a, r in runs.items()}
    timings["attacks"] = time.perf_counter() - began

    rule = config.verdict
    verdicts = judge_zoo(case_ids, recalled, scores, oracle_scores, rule, peers=peers)
    rows = zoo_rows(truths, nominal, verdicts)
    without = {"absolute": zoo_rows(truths, nominal, judge_zoo(case_ids, recalled, scores, None, rule))}
    if config.null:
        without["null"] = zoo_rows(truths, nominal, judge_zoo(case_ids, recalled, scores, None, rule, null=null))
    per_attack = {}
    for i, attack in enumerate(config.attacks):
        alone = {name: [runs[i]] for name, runs in scores.items()}
        rows_alone = zoo_rows(truths, nominal, judge_zoo(case_ids, recalled, alone, [oracle_scores[i]], rule,
                                                         peers=[[p[i]] for p in peers]))
        per_attack[attack] = {name: row.accuracy for name, row in rows_alone.items()}

    began = time.perf_counter()
    check = relearn_check(handles, nominal, verdicts, kept, oracle, peer, config.relearn_check_steps, config.seed)
    timings["relearn_check"] = time.perf_counter() - began

    timings["total"] = sum(timings.values())
    return ZooResult(
        rows=rows, without_oracle=without, per_attack=per_attack,
        margins=attack_margins(oracle_scores, case_ids, rule, peers),
        single_oracle_margins=attack_margins(oracle_scores, case_ids, rule),
        recall={name: sum(r.values()) / len(r) for name, r in recalled.items()}, relearn_check=check, case_ids=case_ids,
        config={**asdict(config), "verdict": asdict(rule)}, timings=timings)


def relearn_check(handles: Mapping[str, Any], nominal: Mapping[str, Truth], verdicts: Mapping[str, Mapping[int, str]],
                  targets: Sequence[Fact], oracle: Any, peer: Any | None, steps: int, seed: int
                  ) -> dict[str, dict[str, float | None]]:
    """Per suppression, how fast its targets relearn by the auditor's verdict on them, beside the oracle and the
    peer on the same targets (audit/relearn_speed.py; `ZooResult.relearn_check`). Empty when `steps` is 0."""
    from audit.relearn_speed import RelearnSpeedConfig, relearn_speed, split_means

    suppressions = [n for n in handles if nominal[n] == "suppressed"]
    if not steps or not suppressions:
        return {}
    settings = RelearnSpeedConfig(steps=steps, seed=seed)
    references = {"oracle": relearn_speed(oracle, targets, settings)}
    if peer is not None:
        references["peer"] = relearn_speed(peer, targets, settings)
    out = {}
    for name in suppressions:
        judged = verdicts[name]
        row: dict[str, float | None] = dict(split_means(relearn_speed(handles[name], targets, settings), judged))
        for who, speeds in references.items():
            row.update({f"{who}:{k}": v for k, v in split_means(speeds, judged).items()})
        row.update({f"n:{v}": float(sum(1 for x in judged.values() if x == v)) for v in ("erased", "suppressed")})
        out[name] = row
    return out
