"""The many-edits record in the report: `obliviate compare` on a folder holding bench_many_edits.py's JSON draws
the curve and tables each method at its largest N beside the unedited model's values."""

from __future__ import annotations

import json
import re

import matplotlib
import pytest

matplotlib.use("Agg")

from audit import compare  # noqa: E402
from audit.edit_scaling import describe, scaling_rows  # noqa: E402


def _row(method: str, n: int, es: float, retain: float, ppl: float) -> dict:
    return {"method": method, "n": n, "n_batches": max(1, n // 100), "edit_s": 4.0 * n, "es": es, "ps": es - 10,
            "ns": 90.0, "retain_recall": retain, "heldout_ppl": ppl}


def test_the_retain_split_gets_its_columns_only_where_the_bench_recorded_it(tmp_path):
    record = _record()
    for row in record["runs"]:
        row.update(retain_recall_same_relation=row["retain_recall"] - 0.1, n_retain_same_relation=40,
                   retain_recall_other_relations=1.0, n_retain_other_relations=160)
    rows = {r["method"]: r for r in scaling_rows(record)}
    assert rows["memit-seq"]["retain_same_relation"] == (pytest.approx(0.42), 40)
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "many_edits.json").write_text(json.dumps(record))
    text = compare.run([folder], tmp_path / "out", echo=None).read_text()
    assert "retain: edited relations (n)" in text and "0.42 (40)" in text and "1.00 (160)" in text
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "many_edits.json").write_text(json.dumps(_record()))
    assert "retain: edited relations" not in compare.run([plain], tmp_path / "out2", echo=None).read_text()


def _record() -> dict:
    base_cf = {str(n): {"es": 0.0, "ps": 5.0, "ns": 100.0} for n in (10, 100)}
    runs = [_row("memit-seq", 10, 100.0, 0.9, 20.5), _row("memit-seq", 100, 99.0, 0.52, 22.0),
            _row("alphaedit", 10, 100.0, 0.99, 20.1), _row("alphaedit", 100, 97.0, 0.97, 20.2)]
    return {"task": "many-edits", "model": "smollm2-135m", "layers": [3, 4, 5, 6], "batch_size": 100,
            "n_unedited": 200, "ns": [10, 100], "covariance": {"corpus": "stdlib-docstrings+place-mentions"},
            "base": {"retain_recall": 1.0, "heldout_ppl": 20.0, "counterfact": base_cf},
            "alphaedit_null_space": {"threshold": 0.02, "energy": 0.005, "l2": 10.0}, "runs": runs}


def test_each_method_is_tabled_at_its_largest_n_beside_the_unedited_values():
    rows = {r["method"]: r for r in scaling_rows(_record())}
    assert list(rows) == ["memit-seq", "alphaedit"]
    assert rows["memit-seq"]["n"] == 100 and rows["memit-seq"]["retain_recall"] == (1.0, 0.52)
    assert rows["alphaedit"]["es"] == (0.0, 97.0)
    assert rows["memit-seq"]["ppl_delta_pct"] == pytest.approx(10.0) and rows["alphaedit"]["ppl_delta_pct"] == \
        pytest.approx(1.0)


def test_the_caption_says_when_alphaedits_c_left_subjects_out():
    record = _record()
    assert "C read without" not in describe(record)
    record["alphaedit_null_space"]["n_subjects_out_of_c"] = 93
    assert "C read without 93 subjects (the edited ones)" in describe(record)
    record["measured_out_of_c"] = ["Peru", "Chile"]
    assert "C read without 93 subjects (the edited ones and 2 of the measured ones)" in describe(record)


def test_compare_on_a_folder_with_only_a_many_edits_record_writes_the_section(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "many_edits.json").write_text(json.dumps(_record()))
    report = compare.run([folder], tmp_path / "out", echo=None)
    text = report.read_text()
    assert "<h2>Many edits</h2>" in text
    assert "energy ≤ 0.005 of C" in text and "C from stdlib-docstrings+place-mentions" in text  # in the caption
    cells = re.findall(r"<tr><td class='l'>memit-seq</td>(.*?)</tr>", text)
    assert len(cells) == 1 and "1.00 → 0.52" in cells[0] and "+10.0" in cells[0]
    images = [src for src in re.findall(r"<img src='([^']+)'", text) if "many_edits" in src]
    assert len(images) == 1 and (report.parent / images[0]).stat().st_size > 0


def test_a_folder_with_neither_audit_results_nor_a_many_edits_record_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "other.json").write_text(json.dumps({"task": "rome-sweep", "runs": []}))
    with pytest.raises(SystemExit, match="no audit results"):
        compare.run([tmp_path / "empty"], tmp_path / "out", echo=None)
