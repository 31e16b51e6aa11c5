"""Counter-example fine-tuning: fine-tune on the forget prompts with their counterfactual answers.

The naive rewrite baseline that ROME and MEMIT are measured against (Meng, Bau, Andonian & Belinkov, NeurIPS 2022,
"Locating and Editing Factual Associations in GPT", the FT / FT-L rows; reference kmeng01/rome
``baselines/ft/ft_main.py``): minimise the NLL of each fact's `target_new` after its prompt, on a copy of the model.
Erasure is read off the true answers it displaces (a fact rewritten to a counterfactual no longer recalls its own).
Here it runs in the GradDiff loop of `edit.baselines.finetune_unlearn` with the relabelled forget answers and the
retain weight α = 0 by default (the reference has no retain term); α > 0 adds the retain NLL.

Deviations from the reference: AdamW without weight decay on every block's weights by default (the reference's
Adam trains the weights of the configured layers; `layers` restricts it here too), the NLL of every answer token
teacher-forced (the reference scores the target tokens at the prompt's last position), no L∞ norm constraint (its
FT-L variant) and no early stop at loss 1e-2: the knob is `steps`, which should mean what it says.

Measured on the world model (forget split, 120 facts; α = 0; recall on the forget facts and 300 retain facts,
0.96 / 0.96 before; batch 32, lr 1e-4): 2 steps → forget 0.93, retain 0.96; 8 → 0.88 / 0.95; 16 → 0.75 / 0.92;
32 → 0.38 / 0.72; 64 → 0.19 / 0.40; 128 → 0.18 / 0.43. At lr 1e-3 two steps already take forget recall to 0.69
and eight to 0.10 (retain 0.15): too coarse for a search over steps. Rewriting facts that share their templates
with the retained ones rewrites those too — the collateral that ROME and MEMIT are meant to avoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edit.baselines import GradDiffConfig, descent_forget_loss, finetune_unlearn
from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec


@dataclass
class CounterexampleConfig(GradDiffConfig):
    """Fine-tune the forget prompts towards their counterfactual answers (target_new)."""

    steps: int = 30
    """Optimiser steps."""
    lr: float = 1e-4
    """AdamW learning rate."""
    alpha: float = 0.0
    """Weight of the retain NLL (0: the naive baseline, as the reference's FT)."""
    stop_when_forgotten: bool = False
    """Stop once no forget prompt ranks its true answer first (off: `steps` is the knob)."""


def counterfactual_answers(facts: Sequence[Fact]) -> list[str]:
    return [fact.target_new for fact in facts]


def counterexample_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact] = (),
                        cfg: CounterexampleConfig | None = None, *, layers: Sequence[int] | None = None
                        ) -> EditResult:
    """Counter-example fine-tuning on a copy of `handle.hf`; the handle is not modified."""
    return finetune_unlearn(handle, targets, retain, cfg or CounterexampleConfig(), descent_forget_loss,
                            method="counterexample_ft", layers=layers, answers=counterfactual_answers)


COUNTER_KNOB = Knob("steps", 2, 128, integer=True,
                    doc="fine-tuning steps towards target_new (lr fixed)")


@EDITS.register("counterexample_ft", CounterexampleConfig,
                spec=Spec(goals=("erase", "rewrite"), layers="any", knob=COUNTER_KNOB))
def counterexample_method(handle: Any, request: EditRequest, cfg: CounterexampleConfig) -> EditResult:
    """Counter-example fine-tuning: train the targets' prompts to their target_new (the same for both goals)."""
    return counterexample_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
