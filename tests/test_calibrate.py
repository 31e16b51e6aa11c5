"""Calibration: the auditor must call the never-learned oracle erased, an output-only suppression suppressed and the
untouched model intact (≥ 95% per row of the confusion matrix), on the world's forget split."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from audit.calibrate import CASES, CalibrationConfig, calibrate, confusion_of


@dataclass
class Scores:
    attack: str
    recovered: dict[int, float]


def test_confusion_counts_rows_by_truth():
    matrix = confusion_of({"erased": {1: "erased", 2: "suppressed"}, "suppressed": {1: "suppressed", 2: "suppressed"},
                           "intact": {1: "intact", 2: "intact"}})
    assert matrix.counts["erased"] == {"erased": 1, "suppressed": 1, "intact": 0}
    assert matrix.row_accuracy == {"erased": 0.5, "suppressed": 1.0, "intact": 1.0}
    assert matrix.min_row_accuracy == 0.5
    assert "row acc" in matrix.table()


@pytest.mark.slow
def test_calibration_with_an_attack_blind_to_internals_fails_the_suppressed_row(world_handle, world_retain_handle):
    # an "attack" that only reads the output (plain p_true) cannot see an output-only suppression: the calibration
    # must notice that (the suppressed row collapses to erased), or it would prove nothing
    from audit.attack_result import plain_scores

    answers_asked = []

    def output_only(base, handle, facts):
        answers_asked.append(tuple(f.target_true for f in facts))
        return Scores("output", {c: t.score for c, t in plain_scores(handle, facts).items()})

    result = calibrate(world_handle, world_retain_handle, config=CalibrationConfig(attacks=("output",), limit=24),
                       runners={"output": output_only})
    assert result.confusion.row_accuracy["suppressed"] < 0.5
    assert result.confusion.row_accuracy["intact"] >= 0.95
    # three cases, the peer, and the no-oracle null on two draws of decoys for the erased and suppressed cases
    assert len(answers_asked) == 3 + 1 + 2 * 2 and len(set(answers_asked[4:])) >= 2
    assert all(asked != answers_asked[0] for asked in answers_asked[4:])


@pytest.mark.slow
def test_calibration_matrix_is_at_least_95_percent_in_every_row(world_handle, world_retain_handle):
    result = calibrate(world_handle, world_retain_handle)
    print("\n" + result.summary())
    assert len(result.case_ids) >= 20, "too few forget facts with a known truth to calibrate on"
    for case in CASES:
        assert result.confusion.row_accuracy[case] >= 0.95, (case, result.confusion.table())
    # the oracle-free rule (used where no oracle exists) must rarely call the never-learned model's facts recovered:
    # world v2 kept it at >= 0.95; on world v3 one draw of decoys measured 0.946 (6 of 112 called suppressed), the
    # default two draws read as one 0.982 (2 of 112; the absolute rule 0.964)
    assert result.without_oracle["null"].row_accuracy["erased"] >= 0.95, result.without_oracle["null"].table()
    # the margin is not a knife edge: a band of margins around the chosen one also passes
    passing = [r["margin"] for r in result.robustness
               if r["spread_k"] == result.config["verdict"]["spread_k"] and r["min_row_accuracy"] >= 0.95]
    assert len(passing) >= 3
