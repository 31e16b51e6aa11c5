"""Config of the audit stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simple_parsing.helpers import field as cli_field

from obliviate.config.loader import InvalidField, check_range


@dataclass
class AttackChoice:
    """An attack with its settings: `{name: relearn, params: {steps: 20, lr: 0.003}}`."""

    name: str
    """A name registered in obliviate.registry.ATTACKS."""
    params: dict[str, Any] = field(default_factory=dict)
    """The attack's own config fields (validated by its config dataclass when the YAML is loaded)."""


@dataclass
class AuditConfig:
    # names or {name, params} mappings cannot be spelled as one flag; attacks are set in the YAML config only
    attacks: list[str | AttackChoice] = cli_field(
        default_factory=lambda: ["keyword", "quantization", "probe", "logit_lens", "relearn"], cmd=False)
    """Recovery attacks, each a registered name (keyword, quantization, probe, logit_lens, base_lens, tuned_lens,
    in_context, relearn, benign_relearn, sae_restore, uds) or {name, params} with the attack's own settings (YAML
    only)."""
    reference: str | None = "world-retain"
    """The never-learned oracle the attacks are calibrated against (None when none exists)."""
    peers: list[str] = cli_field(default_factory=list, cmd=False)
    """Other never-taught models (e.g. world-retain-2, the oracle's recipe from another seed), attacked exactly like
    the oracle: how far each lies from the oracle on the same target sets the margins (audit/verdict.py `peers`).
    Needs `reference`; each peer costs one more run of every attack."""
    margin: float = 0.10
    """A target is 'suppressed' when an attack recovers it this much beyond the oracle under the same attack."""
    without_reference: str | None = None
    """When `reference` is null: "decoy" (the default, None) runs every attack again on decoy answers (another
    answer of the relation that the edited model does not give; `null_draws` times) and judges against that null,
    with the pooled stage on the paired true − decoy differences (audit/verdict.py `decoy_facts`,
    `pooled_null_stage`); "absolute" judges each attack's score against an absolute threshold, without those runs.
    Why decoy: on the calibration zoo without the oracle it is at or above the absolute threshold on every
    suppression (DPO 0.83-0.93 over six pairs of draws against 0.45) and, with two draws, on the never-taught
    models (README). Leave it unset when `reference` names an oracle."""
    null_draws: int = 2
    """Without an oracle, with the decoy null: how many draws of decoys (seeds seed … seed + k − 1), each a run of
    every attack. With k > 1 a target's true-answer score is paired with the mean of its k decoys' in the pooled
    stage (the spread of that difference is √(1 + 1/k) of one decoy's, against √2 for one draw), and the per-target
    quantile reads every single decoy score (audit/verdict.py `DecoyNull`). Why 2: on the zoo (12 draws re-judged,
    README) one draw let a never-taught row fall to 0.875 and DPO to 0.775; pairs of draws kept every never-taught
    row at ≥ 0.950 and DPO at ≥ 0.825 (3 and 4 draws: no better). Each draw costs one more run of the attacks."""
    relearn_steps: int = 10
    """Fine-tuning steps of the relearning attack (on other facts, never the targets), unless its params set
    steps."""
    relearn_check_steps: int = 0
    """With an oracle, when > 0: after the verdicts, copies of the edited model, the oracle and each peer relearn the
    targets themselves for this many steps, and the record gives each one's mean p_true over the targets called
    erased and over those called suppressed (`relearn_check`; audit/relearn_speed.py) — a check from outside the
    attacks, one-sided: targets that relearn faster than on the never-taught models are still held. 0 (default)
    skips it; the demo's config sets 6 (1.0 s for its first edit, three models; 0.35 s for the next, as the
    never-taught models' relearning is shared by every edit)."""
    max_retain: int | None = None
    """Retain facts scored by the collateral and representation measurements: a seeded sample of this many (None =
    all). Both score every retain fact otherwise, the largest cost of a run with few targets."""
    max_heldout_texts: int = 400
    """Held-out texts for the perplexity change (the first ones of the file)."""
    show_progress: bool = True
    """Show progress bars on long loops."""

    def validate(self) -> None:
        from obliviate.registry import ATTACKS

        seen = set()
        for i, (name, _) in enumerate(self.attack_choices()):
            if name not in ATTACKS:
                raise InvalidField(f"attacks[{i}]",
                                   f"unknown attack {name!r}; registered: {', '.join(ATTACKS.names())}.")
            if name in seen:
                raise InvalidField(f"attacks[{i}]", f"attack {name!r} is listed twice; give it once with its params.")
            seen.add(name)
        # a margin is a difference of recovery rates in [0, 1]; 1 or more could never call a target suppressed
        check_range("margin", self.margin, minimum=0, below=1)
        check_range("null_draws", self.null_draws, minimum=1, fix="one draw of decoys is the plain decoy null")
        if self.without_reference not in (None, "absolute", "decoy"):
            raise InvalidField("without_reference", f"{self.without_reference!r}: use 'absolute' or 'decoy'.")
        if self.without_reference is not None and self.reference:
            raise InvalidField("without_reference", "it says how to judge when there is no oracle, but `reference` "
                               f"is {self.reference!r}: drop `without_reference` or set `reference: null`.")
        if self.peers and not self.reference:
            raise InvalidField("peers", "peers widen the margins around the oracle's scores; set `reference` (the "
                               "oracle) too, or give no peers.")
        for i, peer in enumerate(self.peers):
            if not isinstance(peer, str) or not peer:
                raise InvalidField(f"peers[{i}]", f"{peer!r} is not a model name; give names such as world-retain-2.")
            if peer == self.reference:
                raise InvalidField(f"peers[{i}]", f"{peer!r} is the reference itself; a peer must be another "
                                   f"never-taught model (e.g. world-retain-2).")
        check_range("relearn_steps", self.relearn_steps, minimum=1)
        check_range("relearn_check_steps", self.relearn_check_steps, minimum=0)
        if self.relearn_check_steps and not self.reference:
            raise InvalidField("relearn_check_steps", "the check compares relearning with the never-taught oracle's; "
                               "set `reference` too, or 0.")
        check_range("max_retain", self.max_retain, minimum=1, fix="null scores every retain fact")
        check_range("max_heldout_texts", self.max_heldout_texts, minimum=1)

    def attack_choices(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, params) per attack; relearn's steps default to `relearn_steps`."""
        choices = []
        for item in self.attacks:
            name, params = (item, {}) if isinstance(item, str) else (item.name, dict(item.params))
            if name == "relearn":
                params.setdefault("steps", self.relearn_steps)
            choices.append((name, params))
        return choices

    def attack_names(self) -> list[str]:
        return [name for name, _ in self.attack_choices()]

    def check_params(self, where: str = "audit") -> None:
        """Every attack's params built by its config dataclass; errors name the key path under `where`."""
        from obliviate.registry import ATTACKS

        for i, (name, params) in enumerate(self.attack_choices()):
            ATTACKS.get(name).params(params, where=f"{where}.attacks[{i}].params")
