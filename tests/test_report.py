"""The comparison report: the table holds every method's row, every referenced PNG exists, markdown agrees."""

from __future__ import annotations

import re
from dataclasses import dataclass

import matplotlib
import pytest

matplotlib.use("Agg")

from audit.report import audit_metrics, load_run, markdown_table, method_rows, write_report  # noqa: E402
from audit.verdict import judge  # noqa: E402
from obliviate.results import RunDir, StageRecord  # noqa: E402


@dataclass
class Scores:
    attack: str
    recovered: dict[int, float]


class FakeCollateral:
    def __init__(self, retain: float, ppl_delta: float):
        self.figures = {"forget_recall_base": 1.0, "forget_recall_edited": 0.0, "retain_recall_base": 0.95,
                        "retain_recall_edited": retain, "retain_recall_delta": retain - 0.95,
                        "heldout_perplexity_base": 12.0, "heldout_perplexity_edited": 12.0 + ppl_delta,
                        "heldout_perplexity_delta": ppl_delta, "neighborhood_ns_base": 90.0,
                        "neighborhood_ns_edited": 70.0, "neighborhood_ns_delta": -20.0}

    def to_metrics(self):
        return dict(self.figures)


class FakeRepresentation:
    def __init__(self, drop: float):
        self.drop = drop

    def to_metrics(self):
        depths = list(range(5))
        return {"depths": depths, "probe_base": [0.2, 0.5, 0.8, 0.9, 0.9],
                "probe_edited": [0.2, 0.5, 0.8 - self.drop, 0.9 - self.drop, 0.9 - self.drop], "chance": 0.1,
                "cka": [1.0, 1.0, 1.0 - self.drop, 0.8, 0.8], "cka_retain": [1.0] * 5}


def _audit_record(method: str, probe_score: float, drop: float) -> StageRecord:
    cases = [1, 2, 3, 4]
    oracle = [Scores("probe", {c: 0.1 for c in cases}), Scores("logit_lens", {c: 0.0 for c in cases})]
    edited = [Scores("probe", {c: probe_score for c in cases}), Scores("logit_lens", {c: 0.05 for c in cases})]
    verdicts = judge(cases, {4: True}, edited, oracle)
    metrics = audit_metrics(method, verdicts, edited, oracle, FakeCollateral(0.9, 0.4), FakeRepresentation(drop))
    return StageRecord(stage=f"audit.{method}", config={}, metrics=metrics, targets=verdicts.to_records())


def _run(tmp_path, name: str) -> dict:
    run_dir = RunDir(tmp_path / name)
    trace = run_dir.artefact_dir("locate") / "trace_resid_case1.png"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow([[0, 1], [1, 0]])
    fig.savefig(trace)
    plt.close(fig)
    run_dir.write(StageRecord(stage="locate", config={}, artefacts=[run_dir.relative(trace)]))
    run_dir.write(_audit_record("memit", probe_score=0.12, drop=0.6))
    run_dir.write(_audit_record("suppress", probe_score=0.9, drop=0.0))
    return load_run(run_dir.root)


def test_report_holds_every_row_and_every_referenced_png_exists(tmp_path):
    runs = [_run(tmp_path, "world-a")]
    path = write_report(runs, tmp_path / "compare")
    text = path.read_text()
    rows = method_rows(runs)
    assert {r["method"] for r in rows} == {"memit", "suppress"}
    for row in rows:
        cells = re.findall(r"<tr><td class=\"l\">world-a</td><td class=\"l\">" + row["method"] + r"</td>(.*?)</tr>",
                           text)
        assert len(cells) == 1, f"no table row for {row['method']}"
    # memit's probe score is within the margin of the oracle: all erased but the recalled one; suppress: suppressed
    memit = next(r for r in rows if r["method"] == "memit")
    suppress = next(r for r in rows if r["method"] == "suppress")
    assert (memit["erased"], memit["suppressed"], memit["intact"]) == (3, 0, 1)
    assert (suppress["erased"], suppress["suppressed"], suppress["intact"]) == (0, 3, 1)
    sources = re.findall(r"<img src='([^']+)'", text)
    assert len(sources) >= 5  # recovery, verdicts, probe, CKA, one trace
    for source in sources:
        assert not source.startswith(("/", "http")), "images must be referenced relatively (offline)"
        assert (path.parent / source).is_file(), source
    assert any("trace" in s for s in sources)
    assert "<style>" in text and "<script" not in text


def test_markdown_table_has_a_line_per_method_and_the_figures(tmp_path):
    runs = [_run(tmp_path, "a"), _run(tmp_path, "b")]
    table = markdown_table(runs)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:5] == ["run", "method", "erased", "suppressed", "intact"]
    assert "probe recovery" in header and "logit_lens recovery" in header
    memit_a = next(line for line in lines if line.startswith("| a | memit"))
    cells = [c.strip() for c in memit_a.strip("|").split("|")]
    assert cells[2:5] == ["3", "0", "1"]
    assert cells[header.index("probe recovery")] == "0.12 (0.10)"
    assert cells[header.index("Δ perplexity %")] == "+3.3"  # 0.40 on a base of 12.0


def test_empty_runs_still_write_a_page(tmp_path):
    path = write_report([], tmp_path / "empty")
    assert "No audit records" in path.read_text()
    assert markdown_table([]).count("\n") == 2


@pytest.mark.parametrize("bad", [{"stage": "audit", "metrics": {}}])
def test_a_record_without_figures_renders_dashes(tmp_path, bad):
    path = write_report([{"name": "x", "audit": bad}], tmp_path / "partial")
    assert "–" in path.read_text()


def test_same_relation_ns_gets_its_own_column_only_where_recorded(tmp_path):
    world = _run(tmp_path, "world")
    assert "NS same-relation %" not in markdown_table([world]), "the world's table keeps its columns"
    run_dir = RunDir(tmp_path / "smollm2")
    collateral = {"neighborhood_ns_edited": None, "neighborhood_ns_same_relation_base": 91.0,
                  "neighborhood_ns_same_relation_edited": 83.0}
    run_dir.write(StageRecord(stage="audit.rome", config={}, metrics={"method": "rome", "collateral": collateral}))
    lines = markdown_table([world, load_run(run_dir.root)]).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rome = [c.strip() for c in next(line for line in lines if "| rome |" in line).strip("|").split("|")]
    memit = [c.strip() for c in next(line for line in lines if "| memit |" in line).strip("|").split("|")]
    assert header[-2:] == ["NS % (base → edited)", "NS same-relation % (base → edited)"]
    # every NS beside the base model's own (FakeCollateral: 90 → 70); a figure never recorded stays a dash
    assert rome[-2:] == ["–", "91.0 → 83.0"] and memit[-2:] == ["90.0 → 70.0", "–"]


def test_intact_targets_the_oracle_answers_too_are_counted_and_shown(tmp_path):
    from audit.report import summary_lines

    cases = [1, 2, 3, 4]
    oracle = [Scores("logit_lens", {c: 0.0 for c in cases})]
    edited = [Scores("logit_lens", {c: 0.0 for c in cases})]
    verdicts = judge(cases, {1: True, 2: True, 3: False, 4: False}, edited, oracle)  # 1, 2 intact; 3, 4 erased
    # the oracle answers 2 (intact) and 3 (erased): only intact targets it answers are counted
    metrics = audit_metrics("lora_removal", verdicts, edited, oracle, oracle_recalled={1: False, 2: True, 3: True})
    assert metrics["verdict_counts"] == {"erased": 2, "suppressed": 0, "intact": 2}
    assert metrics["intact_oracle_answers"] == 1
    assert "intact_oracle_answers" not in audit_metrics("x", verdicts, edited, oracle)  # no oracle: not claimed

    run_dir = RunDir(tmp_path / "lora")
    run_dir.write(StageRecord(stage="audit.lora_removal", config={}, metrics=metrics))
    run = load_run(run_dir.root)
    lines = markdown_table([run]).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[header.index("intact")] == "2 (oracle 1)" and row[header.index("erased")] == "2"
    assert summary_lines([run]) == ["lora_removal: 2 erased, 0 suppressed, 2 intact (1 of them the oracle answers too)"]


def test_the_relearning_check_gets_a_column_beside_the_never_taught_models_largest_only_where_recorded(tmp_path):
    from audit.report import summary_lines

    world = _run(tmp_path, "world")
    assert "relearned p_true" not in markdown_table([world])
    run_dir = RunDir(tmp_path / "checked")
    check = {"edited": {"erased": 0.43, "suppressed": 0.51}, "world-retain": {"erased": 0.06, "suppressed": 0.14},
             "world-retain-2": {"erased": 0.01, "suppressed": 0.16}}
    run_dir.write(StageRecord(stage="audit.memit", config={}, metrics={"method": "memit", "relearn_check": check}))
    lines = markdown_table([load_run(run_dir.root)]).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[-1] == "relearned p_true: suppressed / erased (never-taught)"
    assert row[-1] == "0.51 / 0.43 (0.16 / 0.06)"  # the largest never-taught figure per verdict
    line = summary_lines([load_run(run_dir.root)])[0]
    assert "relearned p_true suppressed / erased 0.51 / 0.43 (0.16 / 0.06)" in line


def test_a_recorded_subject_ablation_gets_its_table_and_a_run_without_one_none(tmp_path):
    locate = {"stage": "locate", "metrics": {"subject_ablation": {"ablations": [
        {"blocks": [0], "recall_before": 0.992, "recall_ablated": 0.133},
        {"blocks": [0, 1, 2, 3, 4, 5, 6, 7], "recall_before": 0.992, "recall_ablated": 0.158}]}}}
    text = write_report([{"name": "w", "locate": locate}], tmp_path / "with").read_text()
    assert "<h2>Subject ablation</h2>" in text
    assert "<td>0</td><td>0.992</td><td>0.133</td>" in text and "<td>0–7</td><td>0.992</td><td>0.158</td>" in text
    assert "Subject ablation" not in write_report([_run(tmp_path, "plain")], tmp_path / "without").read_text()
