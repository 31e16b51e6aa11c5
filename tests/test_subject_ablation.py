"""Making the world's subjects unknown at their own tokens (locate/subject_ablation.py)."""

from __future__ import annotations

import random

import pytest

from locate.subject_ablation import (ablate_subjects, ablate_subjects_per_block_set, subject_ablation_probe,
                                     subject_ablation_probes)
from obliviate.targets import resolve_facts
from obliviate.world.names import unused_names


def test_unused_names_have_no_subjects_surname_and_are_reproducible():
    taken = ["Vorlak Danthe", "Kelwen Morvane"]
    names = unused_names(taken, 50, random.Random(0))
    assert len(set(names)) == 50 and not {n.split()[1] for n in names} & {"Danthe", "Morvane"}
    assert names == unused_names(taken, 50, random.Random(0))
    with pytest.raises(ValueError, match="only 478 surnames are free"):
        unused_names(taken, 479, random.Random(0))


@pytest.fixture(scope="module")
def world_setup(world_handle):
    facts = resolve_facts("world", seed=0)
    names = unused_names([f.subject for f in facts], 100, random.Random(0))
    return world_handle, facts, names


def test_unknown_writes_at_block_0_take_most_of_the_recall_and_no_blocks_change_nothing(world_setup):
    """Measured on the shipped world (120 forget facts): recall 0.99 → 0.13 with block 0's writes made unknown
    (0.16 with every block's: the rest is looked up elsewhere; world-retain 0.058)."""
    world, facts, names = world_setup
    forget = [f for f in facts if f.split == "forget"][:60]
    ablated = ablate_subjects(world, forget, names, [0])
    assert ablated.recall_before >= 0.95
    assert ablated.recall_ablated <= 0.3 and ablated.p_true_ablated < ablated.p_true_before / 3
    shared, untouched = ablate_subjects_per_block_set(world, forget, names, [[0], []])
    assert untouched.recall_ablated == untouched.recall_before
    assert untouched.p_true_ablated == pytest.approx(untouched.p_true_before, abs=1e-6)
    assert shared == ablated  # one pass over the unknown names for several sets of blocks reads the same


def test_a_probe_at_the_subject_reads_the_attribute_only_while_the_writes_are_the_subjects_own(world_setup):
    """Fitted on the other subjects' names, read on the forget subjects' (mean over relations, per depth): 0.92
    at depth 4 as the model writes them, 0.07 with blocks 0-2 made unknown (world-retain: 0.07)."""
    world, facts, names = world_setup
    held = {f.subject for f in facts if f.split == "forget"}
    own = subject_ablation_probe(world, facts, held, names, [0, 1, 2], ablate=False)
    ablated = subject_ablation_probe(world, facts, held, names, [0, 1, 2])
    assert len(own) == world.n_layers
    assert own[3] >= 0.8 and ablated[3] <= 0.2
    assert subject_ablation_probes(world, facts, held, names, [[0, 1, 2], []]) == [ablated, own]


LOCATE_CONFIG = """\
model: world
facts: world
split: forget
limit: 12
seed: 0
locate:
  methods: [trace, subject_ablation]
  max_targets: 2
  corruption: replace
  window: 1
  show_progress: false
"""


def test_the_locate_stage_records_the_ablation_up_to_the_proposed_block_and_in_every_block(tmp_path):
    import json

    from obliviate.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(LOCATE_CONFIG)
    assert main(["locate", str(config), "--out", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "locate.json").read_text())
    proposed = record["metrics"]["proposed_edit_layers"]["layers"]
    found = record["metrics"]["subject_ablation"]
    assert [a["blocks"] for a in found["ablations"]] == [list(range(max(proposed) + 1)), list(range(8))]
    assert all(a["recall_before"] >= 0.9 and a["recall_ablated"] < a["recall_before"] for a in found["ablations"])
    assert len(found["probe_as_written"]) == len(found["probe_ablated"]) == 8
    assert "subject_ablation" in record["timings"]


def test_unknown_names_that_are_empty_are_an_error_naming_the_key(tmp_path):
    from obliviate.config import RunConfig
    from obliviate.config.loader import load_yaml

    config = tmp_path / "run.yaml"
    config.write_text(LOCATE_CONFIG + "  unknown_names: []\n")
    with pytest.raises(ValueError, match="unknown_names"):
        load_yaml(RunConfig, config)
