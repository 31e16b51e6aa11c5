"""bench/bench_many_edits.py: the sequential runs' batches cover every fact once, in order, and stop at each N."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_many_edits.py"
_SPEC = importlib.util.spec_from_file_location("bench_many_edits", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


@pytest.mark.parametrize(("n_max", "size", "checkpoints"), [(1000, 100, [10, 100, 1000]), (10, 5, [10]),
                                                             (37, 8, [3, 20, 37]), (5, 100, [5])])
def test_batches_cover_the_facts_once_and_end_at_every_checkpoint(n_max, size, checkpoints):
    spans = bench.checkpoint_spans(n_max, size, checkpoints)
    assert spans[0][0] == 0 and spans[-1][1] == n_max
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: no fact skipped or repeated
    assert all(0 < hi - lo <= size for lo, hi in spans)
    assert set(checkpoints) <= {hi for _, hi in spans}


def test_the_paper_batches_are_cut_only_where_a_checkpoint_falls():
    spans = bench.checkpoint_spans(1000, 100, [10, 100, 1000])
    assert spans[:3] == [(0, 10), (10, 100), (100, 200)] and len(spans) == 11


def test_an_unknown_method_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "memit,rome"])
    assert "--methods" in capsys.readouterr().err


def test_retain_recall_is_split_by_shared_relation_and_subject():
    from types import SimpleNamespace as F

    edited = [F(relation_id="P36", subject="France"), F(relation_id="P30", subject="Chile")]
    unedited = [F(relation_id="P36", subject="Peru"), F(relation_id="P36", subject="Chile"),
                F(relation_id="P37", subject="France"), F(relation_id="P159", subject="Nissan")]
    split = bench.retain_split(edited, unedited, [False, True, False, True])
    assert split["retain_recall"] == 0.5
    assert (split["retain_recall_same_relation"], split["n_retain_same_relation"]) == (0.5, 2)  # Peru ✗, Chile ✓
    assert (split["retain_recall_other_relations"], split["n_retain_other_relations"]) == (0.5, 2)
    assert (split["retain_recall_same_subject"], split["n_retain_same_subject"]) == (0.5, 2)  # Chile ✓, France ✗
    none = bench.retain_split(edited, unedited[3:], [True])
    assert none["retain_recall_same_relation"] is None and none["n_retain_same_relation"] == 0


def test_unedited_facts_are_the_last_ones_or_whole_subjects_none_of_which_is_edited():
    from types import SimpleNamespace as F

    facts = [F(subject=s, relation_id=r) for s, r in
             [("A", 1), ("B", 1), ("A", 2), ("C", 1), ("B", 2), ("C", 2), ("D", 1)]]
    editable, unedited = bench.split_unedited(facts, 2, whole_subjects=False)
    assert editable == facts[:5] and unedited == facts[5:]  # C's second fact unedited, its first editable
    editable, unedited = bench.split_unedited(facts, 2, whole_subjects=True)
    assert {f.subject for f in unedited} == {"D", "C"} and len(unedited) == 3  # D alone is 1 fact: C joins
    assert not {f.subject for f in editable} & {f.subject for f in unedited}
    assert editable == [facts[i] for i in (0, 1, 2, 4)]  # the shuffle's order kept


def test_params_reach_the_configs_that_have_them_and_unknown_ones_are_refused():
    from edit.alphaedit import AlphaEditConfig
    from edit.memit import MemitConfig

    memit, alpha = bench.configured({"steps": 60, "mom2_update_weight": 600.0, "l2": 3.0}, MemitConfig(),
                                    AlphaEditConfig())
    assert (memit.steps, alpha.steps, memit.mom2_update_weight, alpha.l2) == (60, 60, 600.0, 3.0)
    with pytest.raises(SystemExit, match="stepz"):
        bench.configured({"stepz": 1}, MemitConfig(), AlphaEditConfig())


def test_retain_recall_is_split_by_whether_c_named_the_subject_and_the_left_out_share_is_seeded():
    from types import SimpleNamespace as F

    edited = [F(relation_id="P36", subject="France")]
    unedited = [F(relation_id="P36", subject=s) for s in ("Peru", "Peru", "Chile", "Japan")]
    split = bench.retain_split(edited, unedited, [True, False, True, True], out_of_c=frozenset({"Peru", "France"}))
    assert (split["retain_recall_out_of_c"], split["n_retain_out_of_c"]) == (0.5, 2)
    assert (split["retain_recall_in_c"], split["n_retain_in_c"]) == (1.0, 2)
    assert "retain_recall_in_c" not in bench.retain_split(edited, unedited, [True] * 4)
    chosen = bench.measured_out_of_c(unedited, 0.5, seed=0)
    assert len(chosen) == 2 and set(chosen) <= {"Peru", "Chile", "Japan"}  # half of 3 subjects, rounded
    assert chosen == bench.measured_out_of_c(unedited, 0.5, seed=0) and bench.measured_out_of_c(unedited, 0, 0) == []


def test_leaving_measured_subjects_out_of_c_needs_the_alphaedit_flag(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "alphaedit", "--n", "1", "--measured-out-of-c", "0.5"])
    assert "c_without_edited_subjects" in capsys.readouterr().err
