"""Operating-point searches through audit and report: the audit record carries its edit's search; the report draws
a trajectory per searched method and an overlay, the table gains knob / value / status columns, and a run without a
search renders as before. Records are built by hand from constructed searches (edit/search.py on known
trajectories), no model."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

from audit.report import audit_metrics, load_run, markdown_table, summary_lines, write_report  # noqa: E402
from audit.stage import edit_operating_point  # noqa: E402
from edit.search import NOT_REACHED, REACHED, Point, search_knob  # noqa: E402
from obliviate.config import EditConfig  # noqa: E402
from obliviate.registry import Knob  # noqa: E402
from obliviate.results import RunDir, StageRecord  # noqa: E402

# memit's knob: stronger when lower, log-scaled (as registered in edit/memit.py)
LAMBDA = Knob("mom2_per_d_mlp", 0.01, 100.0, stronger="lower")
CLAMP = Knob("clamp_norm_factor", 0.25, 16.0)
BASE_HEADER = ["run", "method", "erased", "suppressed", "intact", "probe recovery", "forget recall",
               "retain recall", "Δ perplexity %", "NS % (base → edited)"]


def _search(knob: Knob, forget, *, target: float = 0.2, oracle: float | None = 0.1) -> dict:
    """The edit stage's search record on a constructed trajectory `forget(value)`."""
    def evaluate(value):
        f = forget(value)
        return Point(value, f, 0.9 - 0.1 * (1 - f), 0.1 * (1 - f), 1.0 + 0.2 * (1 - f), {"recovery_probe": f / 2})
    found = search_knob(knob, evaluate, target=target, max_retain_drop=0.5)
    return {**found.to_dict(), "oracle_forget_recall": oracle, "retain_recall_base": 0.9, "perplexity_base": 12.0}


# memit forgets everything below λ = 1: reached; rome's forget recall never goes below 0.5: does not reach
MEMIT = _search(LAMBDA, lambda v: 0.0 if v <= 1.0 else 1.0)
ROME = _search(CLAMP, lambda v: 0.5 if v >= 1.0 else 1.0)


def _audit(method: str, operating_point: dict | None = None) -> StageRecord:
    collateral = {"forget_recall_edited": 0.1, "retain_recall_edited": 0.85, "heldout_perplexity_base": 12.0,
                  "heldout_perplexity_delta": 0.6, "neighborhood_ns_edited": 80.0}
    metrics = {**audit_metrics(method, operating_point=operating_point),
               "verdict_counts": {"erased": 3, "suppressed": 1, "intact": 0}, "recovery": {"probe": 0.2},
               "collateral": collateral}
    return StageRecord(stage=f"audit-{method}", config={}, metrics=metrics)


def _edit(method: str, operating_point: dict | None) -> StageRecord:
    metrics = {"method": method} | ({"operating_point": operating_point} if operating_point else {})
    return StageRecord(stage=f"edit-{method}", config={}, metrics=metrics)


def _searched_run(tmp_path) -> dict:
    run_dir = RunDir(tmp_path / "searched")
    run_dir.write(_edit("memit", MEMIT))
    run_dir.write(_edit("rome", ROME))
    run_dir.write(_audit("memit", MEMIT))  # the audit stage's copy
    run_dir.write(_audit("rome"))  # audited before the copy existed: read from the edit record
    return load_run(run_dir.root)


def _plain_run(tmp_path) -> dict:
    run_dir = RunDir(tmp_path / "plain")
    run_dir.write(_edit("memit", None))
    run_dir.write(_audit("memit"))
    return load_run(run_dir.root)


def _cells(table: str, method: str) -> dict[str, str]:
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines if f"| {method} |" in line)
    return dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))


def test_the_constructed_searches_are_one_reached_and_one_not():
    assert MEMIT["status"] == REACHED and MEMIT["chosen"]["value"] <= 1.0
    assert ROME["status"] == NOT_REACHED


def test_table_gains_knob_value_and_status_and_labels_a_missed_operating_point(tmp_path):
    table = markdown_table([_searched_run(tmp_path)])
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[:5] == ["run", "method", "knob", "value", "status"]
    memit, rome = _cells(table, "memit"), _cells(table, "rome")
    assert memit["knob"] == "mom2_per_d_mlp" and memit["status"].startswith("reached")
    assert float(memit["value"]) == float(f"{MEMIT['chosen']['value']:.3g}")
    assert "best point" not in memit["status"]
    assert rome["knob"] == "clamp_norm_factor" and rome["status"].startswith("does not reach")
    assert "row at its best point" in rome["status"], "a missed operating point says where its figures come from"
    assert rome["value"] == f"{ROME['chosen']['value']:.3g}"
    assert rome["erased"] == "3", "its verdict counts are still shown"


def test_report_draws_a_trajectory_per_method_and_an_overlay_under_trajectories(tmp_path):
    path = write_report([_searched_run(tmp_path)], tmp_path / "report")
    text = path.read_text()
    assert text.count("<h2>Trajectories</h2>") == 1
    section = text.split("<h2>Trajectories</h2>", 1)[1].split("<h2>", 1)[0]
    sources = re.findall(r"<img src='([^']+)'", section)
    assert len(sources) == 3, sources  # memit, rome, the overlay
    assert any("memit" in s for s in sources) and any("rome" in s for s in sources)
    assert "plots/trajectories.png" in sources
    for source in sources:
        assert (path.parent / source).is_file(), source
    # the HTML table carries the same columns, the status left-aligned as words
    assert "<th class=\"l\">status</th>" in text
    assert re.search(r"<td class=\"l\">rome</td><td class=\"l\">clamp_norm_factor</td><td class=\"\">[^<]+</td>"
                     r"<td class=\"l\">does not reach \(row at its best point\)", text)
    assert "does not reach</b> was edited and audited at its best point" in text


def test_a_run_without_a_search_renders_as_before(tmp_path):
    run = _plain_run(tmp_path)
    table = markdown_table([run])
    assert [c.strip() for c in table.splitlines()[0].strip("|").split("|")] == BASE_HEADER
    text = write_report([run], tmp_path / "report").read_text()
    assert "Trajectories" not in text and "knob" not in text and "status" not in text
    assert not list((tmp_path / "report" / "plots").glob("trajector*.png"))
    assert summary_lines([run]) == ["memit: 3 erased, 1 suppressed, 0 intact; forget recall 0.10; retain recall "
                                    "0.85"]


def test_a_mixed_comparison_gives_the_unsearched_run_dashes(tmp_path):
    table = markdown_table([_searched_run(tmp_path), _plain_run(tmp_path)])
    plain = next(line for line in table.splitlines() if line.startswith("| plain | memit"))
    assert [c.strip() for c in plain.strip("|").split("|")][2:5] == ["–", "–", "–"]


def test_the_terminal_summary_names_the_status(tmp_path):
    lines = summary_lines([_searched_run(tmp_path)])
    rome = next(line for line in lines if line.startswith("rome:"))
    assert "operating point does not reach (row at its best point) at clamp_norm_factor=" in rome


def test_audit_stage_copies_the_edits_search_record(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    run_dir.write(_edit("memit", MEMIT))
    run_dir.write(_edit("rome", None))
    assert edit_operating_point(run_dir, EditConfig(method="memit")) == MEMIT
    assert edit_operating_point(run_dir, EditConfig(method="rome")) is None, "edited at its configuration"
    assert edit_operating_point(run_dir, EditConfig(method="pga")) is None, "no edit record: nothing to copy"
    assert audit_metrics("memit", operating_point=MEMIT)["operating_point"]["status"] == REACHED
    assert "operating_point" not in audit_metrics("memit")
