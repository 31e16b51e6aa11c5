"""The never-taught models' attack runs, computed once per audit stage and shared by every edit it audits.

An attack's run on the oracle (``audit.reference``) and on each peer (``audit.peers``) depends on the attack, its
settings and the targets — never on the edit being audited: every attack seeds its own randomness from its config
and reads the base model only as the "before" reference. So they run on the first edit that asks and are reused
(configs/world-compare.yaml, one peer: the first audit's nine attacks took 432 s, the second's 100 s).

Attacks that need the oracle *inside* their computation (registered with ``needs=("oracle",)``, e.g. UDS, whose
first stage patches the oracle's activations into the attacked model) keep running the oracle per edit; their peer
runs are still shared.

The relearning check beside the verdicts (`audit.relearn_check_steps`, audit/relearn_speed.py) is shared the same
way: the never-taught models relearn the same targets whatever the edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.attack_result import AttackContext, AttackResult, nest_oracle, run_attack
from obliviate.facts import Fact
from obliviate.registry import ATTACKS


@dataclass
class ReferenceRuns:
    """Attack runs on the oracle and the peers, keyed by (attack, settings, targets)."""

    oracle: Any | None
    """The never-learned reference model (None: no oracle runs, and no peers either)."""
    peers: Sequence[Any] = ()
    """Other never-taught models (their runs set the verdict's margins)."""
    _oracle_runs: dict[str, AttackResult] = field(default_factory=dict, repr=False)
    _peer_runs: dict[str, list[AttackResult]] = field(default_factory=dict, repr=False)
    _relearned: dict[str, list[dict[int, float]]] = field(default_factory=dict, repr=False)

    @property
    def computed(self) -> int:
        """How many (attack, settings, targets) keys have been run (the rest were reused)."""
        return len(self._peer_runs)

    @staticmethod
    def key(name: str, cfg: Any, targets: Sequence[Fact]) -> str:
        # a config dataclass's repr lists every field; the targets by case id (their order matters to the result)
        return f"{name}|{cfg!r}|{[f.case_id for f in targets]}"

    def run(self, name: str, base: Any, edited: Any, targets: Sequence[Fact], cfg: Any,
            context: AttackContext) -> tuple[AttackResult, list[AttackResult]]:
        """`name` on `edited` with the oracle's run nested in it (as `run_attack` with the oracle bound returns
        it), and each peer's run — the oracle's and the peers' from an earlier edit when one asked the same."""
        key = self.key(name, cfg, targets)
        needs_oracle = "oracle" in ATTACKS.get(name).needs
        bare = dataclasses.replace(context, oracle=None)
        if key not in self._peer_runs:
            # a peer is attacked as if it were the edited model; the oracle only goes to an attack that needs it
            peer_context = context if needs_oracle else bare
            self._peer_runs[key] = [run_attack(name, base, peer, targets, cfg, peer_context)
                                    for peer in (self.peers if self.oracle is not None else ())]
            if self.oracle is not None and not needs_oracle:
                self._oracle_runs[key] = run_attack(name, base, self.oracle, targets, cfg, bare)
        if self.oracle is None or needs_oracle:
            result = run_attack(name, base, edited, targets, cfg, dataclasses.replace(context, oracle=self.oracle))
        else:
            result = nest_oracle(run_attack(name, base, edited, targets, cfg, bare), self._oracle_runs[key])
        return result, self._peer_runs[key]

    def relearn_speeds(self, targets: Sequence[Fact], config: Any) -> list[dict[int, float]]:
        """audit/relearn_speed.py `relearn_speed` on the oracle, then on each peer — once per (settings, targets)."""
        from audit.relearn_speed import relearn_speed

        key = self.key("relearn_speed", config, targets)
        if key not in self._relearned:
            self._relearned[key] = [relearn_speed(model, targets, config) for model in (self.oracle, *self.peers)]
        return self._relearned[key]
