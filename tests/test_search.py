"""The operating-point search on constructed trajectories, where the right answer is known."""

from __future__ import annotations

import json
import math

import pytest

from edit.search import NOT_REACHED, REACHED, Point, search_knob
from obliviate.registry import Knob

LOG_KNOB = Knob("lr", 1e-5, 1e-1)


def _trajectory(threshold: float, retain_loss_at: float = math.inf, calls: list | None = None):
    """forget recall 1 below `threshold`, then 0; retain falls by 0.2 beyond `retain_loss_at`."""
    def evaluate(value):
        if calls is not None:
            calls.append(value)
        forget = 0.0 if value >= threshold else 1.0
        drop = 0.2 if value >= retain_loss_at else 0.0
        return Point(value, forget, 1.0 - drop, drop)
    return evaluate


def test_bisection_finds_the_weakest_setting_that_reaches_within_the_budget():
    calls: list = []
    found = search_knob(LOG_KNOB, _trajectory(3e-3, calls=calls), target=0.5, max_retain_drop=0.05, budget=8)
    assert found.status == REACHED and found.chosen.value >= 3e-3
    assert len(calls) == len(set(calls)) == len(found.points) <= 8  # cached: no value twice, within budget
    # every failing point tried is weaker than the chosen one, every reaching point at least as strong
    assert all((p.value < found.chosen.value) == (p.forget_recall > 0.5) for p in found.points)
    # with budget 8 on [1e-5, 1e-1], six bisections narrow 4 decades to a factor ≤ 10**(4/64)
    weaker = max(p.value for p in found.points if p.forget_recall > 0.5)
    assert found.chosen.value / weaker <= 10 ** (4 / 2 ** 6) + 1e-9


def test_a_weakest_end_that_already_reaches_is_chosen_after_two_evaluations():
    found = search_knob(LOG_KNOB, _trajectory(0.0), target=0.5, max_retain_drop=0.05)
    assert found.status == REACHED and found.chosen.value == 1e-5 and len(found.points) == 2


def test_does_not_reach_when_even_the_strongest_setting_leaves_too_much():
    found = search_knob(LOG_KNOB, _trajectory(1.0), target=0.5, max_retain_drop=0.05)
    assert found.status == NOT_REACHED and len(found.points) == 1 and "strongest" in found.reason


def test_does_not_reach_within_the_retain_budget_reports_the_best_point():
    found = search_knob(LOG_KNOB, _trajectory(1e-3, retain_loss_at=1e-4), target=0.5, max_retain_drop=0.05)
    assert found.status == NOT_REACHED and "retain" in found.reason
    assert found.chosen.retain_drop <= 0.05  # the best point is one within the retain budget


def test_an_exhausted_budget_stops_and_reports_the_best_reaching_point():
    found = search_knob(LOG_KNOB, _trajectory(3e-3), target=0.5, max_retain_drop=0.05, budget=3)
    assert found.budget_exhausted and len(found.points) == 3 and found.status == REACHED
    assert found.chosen.forget_recall == 0.0


def test_a_knob_stronger_when_lower_searches_downwards():
    knob = Knob("alpha", -32.0, -0.25, stronger="lower")  # steering: more negative is stronger
    found = search_knob(knob, lambda v: Point(v, 0.0 if v <= -4 else 1.0, 1.0, 0.0), target=0.5,
                        max_retain_drop=0.05)
    assert found.status == REACHED and -4.5 <= found.chosen.value <= -4


def test_an_integer_knob_stops_at_adjacent_integers():
    knob = Knob("rounds", 0, 7, scale="linear", integer=True)
    found = search_knob(knob, lambda v: Point(v, 0.0 if v >= 3 else 1.0, 1.0, 0.0), target=0.5,
                        max_retain_drop=0.05)
    assert found.chosen.value == 3 and all(isinstance(p.value, int) for p in found.points)


def test_a_method_without_a_knob_is_evaluated_once_and_judged():
    found = search_knob(None, lambda v: Point(v, 0.8, 1.0, 0.0), target=0.5, max_retain_drop=0.05)
    assert found.status == NOT_REACHED and len(found.points) == 1


def test_the_budget_must_allow_one_evaluation():
    with pytest.raises(ValueError):
        search_knob(LOG_KNOB, _trajectory(1.0), target=0.5, max_retain_drop=0.05, budget=0)


@pytest.mark.parametrize(("op", "message"), [
    ({"forget_recall": 1.5}, r"'operating_point.forget_recall'.*out of range"),
    ({"forget_recall": -0.1}, r"'operating_point.forget_recall'"),
    ({"forget_recall": "orcle+0.05"}, r"'operating_point.forget_recall'"),
    ({"forget_recall": "oracle+x"}, r"'operating_point.forget_recall'.*not a number"),
    ({"max_retain_drop": 2}, r"'operating_point.max_retain_drop'"),
    ({"max_evaluations": 9}, r"'operating_point.max_evaluations'"),
    ({"attacks": ["nope"]}, r"'operating_point.attacks\[0\]'.*registered"),
])
def test_an_operating_point_outside_its_range_is_an_error_naming_the_key(op, message):
    from obliviate.config import ConfigError, RunConfig, from_dict

    with pytest.raises(ConfigError, match=message):
        from_dict(RunConfig, {"operating_point": op})


def test_the_operating_point_and_knob_range_load_and_resolve():
    from obliviate.config import ConfigError, RunConfig, from_dict

    config = from_dict(RunConfig, {"operating_point": {"forget_recall": "oracle + 0.05", "max_retain_drop": 0.05},
                                   "edits": [{"method": "graddiff", "knob_range": [1e-4, 1e-2]}]})
    assert config.operating_point.target(0.10) == pytest.approx(0.15)
    assert from_dict(RunConfig, {"operating_point": {"forget_recall": 0.2}}).operating_point.target(None) == 0.2
    with pytest.raises(ConfigError, match=r"'operating_point.forget_recall'.*audit.reference is null"):
        from_dict(RunConfig, {"operating_point": {}, "audit": {"reference": None}})
    with pytest.raises(ConfigError, match=r"'edits\[0\].knob_range'.*reversed"):
        from_dict(RunConfig, {"edits": [{"method": "graddiff", "knob_range": [1e-2, 1e-4]}]})
    with pytest.raises(ConfigError, match=r"'edits\[0\].knob_range'.*no strength knob"):
        from_dict(RunConfig, {"edits": [{"method": "leace", "knob_range": [1, 2]}]})


def test_does_not_reach_reports_the_retain_frontier_not_the_weak_end():
    """Forgetting falls and retain loss rises steadily over four decades; forgetting 90% costs 18pp of retain
    recall, the budget allows 5pp (reached at 1e-4, where forget recall is 0.75): that frontier is reported."""
    def evaluate(value):
        strength = (math.log10(value) + 5) / 4  # 0 at 1e-5, 1 at 1e-1
        return Point(value, 1.0 - strength, 1.0 - 0.2 * strength, 0.2 * strength)

    found = search_knob(LOG_KNOB, evaluate, target=0.1, max_retain_drop=0.05, budget=8)
    assert found.status == NOT_REACHED and "retain" in found.reason
    assert found.chosen.retain_drop <= 0.05
    assert found.chosen.forget_recall <= 0.76  # at the frontier (0.75), not the weak end (1.0)
    assert len(found.points) <= 8


def test_a_method_that_never_forgets_enough_is_shown_at_its_retain_frontier():
    """Even the strongest setting leaves half the targets recalled, and costs 20pp of retain recall: the row shows
    the most it forgets within the 5pp budget (strength 0.25, forget recall 0.875), not the strongest setting."""
    def evaluate(value):
        strength = (math.log10(value) + 5) / 4
        return Point(value, 1.0 - 0.5 * strength, 1.0 - 0.2 * strength, 0.2 * strength)

    found = search_knob(LOG_KNOB, evaluate, target=0.1, max_retain_drop=0.05, budget=8)
    assert found.status == NOT_REACHED and "strongest" in found.reason
    assert found.chosen.retain_drop <= 0.05 and found.chosen.forget_recall <= 0.88


def test_an_edit_with_search_false_runs_at_its_params_beside_searched_ones(tmp_path, world_handle, monkeypatch):
    """`search: false` keeps an edit at its configuration under a run's operating point (lora_removal's full
    removal beside searched methods); the others are still searched, and the two settings cannot be combined."""
    import edit.stage
    from obliviate.config import ConfigError, RunConfig, from_dict
    from obliviate.results import RunDir

    config = from_dict(RunConfig, {
        "model": "world", "facts": "world", "split": "forget", "limit": 4,
        "operating_point": {"forget_recall": 0.2, "max_retain_drop": 0.05, "max_evaluations": 2},
        "edits": [{"method": "suppress", "name": "fixed", "params": {"penalty": 7.0}, "search": False},
                  {"method": "suppress", "name": "searched"}]})
    monkeypatch.setattr(edit.stage, "measure", lambda *args: {})  # the figures are not what is tested here
    run_dir = RunDir(tmp_path / "run")
    fixed = edit.stage.run_edit(config, config.edits[0], run_dir, base=world_handle)
    searched = edit.stage.run_edit(config, config.edits[1], run_dir, base=world_handle, oracle_recall=0.0)
    assert "operating_point" not in fixed["metrics"]
    assert json.loads((tmp_path / "run" / "edit-fixed" / "artefact" / "manifest.json").read_text()
                      )["config"]["penalty"] == 7.0
    assert len(searched["metrics"]["operating_point"]["points"]) == 2
    # at its default the field stays out of the stage's inputs: run folders made before it are not re-run
    assert "search" not in edit.stage.edit_inputs(config, config.edits[1], run_dir)["edit"]
    assert edit.stage.edit_inputs(config, config.edits[0], run_dir)["edit"]["search"] is False
    with pytest.raises(ConfigError, match=r"'edits\[0\].knob_range'.*search is false"):
        from_dict(RunConfig, {"edits": [{"method": "graddiff", "knob_range": [1e-4, 1e-2], "search": False}]})
