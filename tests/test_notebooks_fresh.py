"""Committed notebooks carry outputs of their current code (obliviate/notebooks.py), within the size budget.

The checks on the committed notebooks fail until `make notebooks` has executed them and the result is committed,
and again whenever a code cell is edited without re-executing: that is what they are for. Run them alone with

    pytest -m notebooks_fresh tests/test_notebooks_fresh.py

The executor's own tests build notebooks by hand (and run two tiny ones in a real kernel)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from obliviate.notebooks import (MAX_TOTAL_BYTES, METADATA_KEY, NotebookError, clean_outputs, code_hash, execute,
                                 kernel_environment, staleness)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PROGRESS = "\r 50%|#####     | 5/10 [00:01<00:01,  5.00it/s]\r100%|##########| 10/10 [00:02<00:00,  5.00it/s]\n"


# ------------------------------------------------------------------------------------------ the committed notebooks
@pytest.mark.notebooks_fresh
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_holds_the_outputs_of_its_current_code(path):
    problems = staleness(nbformat.read(path, as_version=4))
    assert not problems, (f"{path.name}: {'; '.join(problems)}. Re-execute with `make notebooks` (or "
                          f"`python -m obliviate.notebooks {path.relative_to(NOTEBOOKS_DIR.parent)}`) and commit it.")


@pytest.mark.notebooks_fresh
def test_committed_notebooks_fit_the_size_budget():
    assert len(NOTEBOOKS) == 3
    sizes = {p.name: p.stat().st_size for p in NOTEBOOKS}
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES, f"{sizes}: lower notebooks/matplotlibrc's dpi or draw less"


# ------------------------------------------------------------------------------------------ the code hash
def _notebook(*sources: str, markdown: str = "# title") -> nbformat.NotebookNode:
    return new_notebook(cells=[new_markdown_cell(markdown), *(new_code_cell(s) for s in sources)],
                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def test_the_code_hash_reads_the_code_cells_and_nothing_else():
    reference = code_hash(_notebook("x = 1", "print(x)"))
    assert code_hash(_notebook("x = 1", "print(x)", markdown="# other prose")) == reference
    assert code_hash(_notebook("x = 2", "print(x)")) != reference
    assert code_hash(_notebook("print(x)", "x = 1")) != reference, "cell order is part of the code"
    assert code_hash(_notebook("x = 1\nprint(x)")) != reference, "so are cell boundaries"
    as_lines = _notebook("x = 1", "print(x)")
    as_lines.cells[2].source = ["print(", "x)"]  # nbformat's on-disk list-of-lines form of the same source
    as_lines.cells[2].outputs = [new_output("stream", name="stdout", text="1\n")]
    as_lines.cells[2].execution_count = 2
    assert code_hash(as_lines) == reference, "outputs and the source's storage form are not code"


def test_staleness_names_each_way_outputs_can_lie():
    notebook = _notebook("x = 1", "print(x)")
    assert staleness(notebook) == ["never executed by `make notebooks` (no code hash in its metadata)"]
    notebook.metadata[METADATA_KEY] = {"code_sha256": code_hash(notebook), "git_commit": "abc"}
    for count, cell in enumerate(notebook.cells[1:], start=1):
        cell.execution_count = count
    notebook.cells[2].outputs = [new_output("stream", name="stdout", text="1\n")]
    assert staleness(notebook) == []
    notebook.cells[1].source = "x = 2"
    assert staleness(notebook) == ["its code cells changed since it was executed (on commit abc)"]
    notebook.cells[1].source = "x = 1"
    notebook.cells[1].execution_count = None
    assert staleness(notebook) == ["code cells [0] have not been executed"]
    notebook.cells[1].execution_count = 1
    notebook.cells[2].outputs = [new_output("error", ename="KeyError", evalue="'x'", traceback=[])]
    assert staleness(notebook) == ["cell 2: KeyError: 'x'"]
    notebook.cells[2].outputs = [new_output("stream", name="stderr", text="Traceback (most recent call last):\n")]
    assert staleness(notebook) == ["cell 2: a traceback in its stderr"]
    notebook.cells[2].outputs = [new_output("stream", name="stderr",
                                            text="/root/.venv/lib/site-packages/x.py:1: Note\n")]
    assert staleness(notebook) == ["cell 2: a local path in its stderr"]
    notebook.cells[2].outputs = []
    assert staleness(notebook) == ["it has no outputs"]


def test_progress_bars_leave_stderr_and_everything_else_stays():
    notebook = _notebook("pass", "pass")
    notebook.cells[1].outputs = [new_output("stream", name="stderr", text=PROGRESS)]
    notebook.cells[2].outputs = [new_output("stream", name="stdout", text="5/10 done\n"),
                                 new_output("stream", name="stderr", text=["a real warning\n", PROGRESS])]
    clean_outputs(notebook)
    assert notebook.cells[1].outputs == [], "a stream of progress bars only is dropped"
    assert [o.text for o in notebook.cells[2].outputs] == ["5/10 done\n", "a real warning\n"]


# ------------------------------------------------------------------------------------------ a real kernel
def test_execute_runs_in_place_from_an_empty_cache_and_records_the_code(tmp_path, monkeypatch):
    monkeypatch.delenv("OBLIVIATE_CACHE", raising=False)
    shutil.copy(NOTEBOOKS_DIR / "matplotlibrc", tmp_path / "matplotlibrc")  # as beside the project's notebooks
    path = tmp_path / "probe.ipynb"
    nbformat.write(_notebook(
        'import os, warnings\nwarnings.warn("a dependency\'s deprecation notice", FutureWarning)\n'
        'print(os.environ["TQDM_DISABLE"], os.listdir(os.environ["OBLIVIATE_CACHE"]))',
        f"import sys\n_ = sys.stderr.write({PROGRESS!r} + 'a real warning\\n')",
        # locate's plots must leave the kernel's inline backend alone, and the figure is a PNG at the rc's dpi
        "import matplotlib\nfrom locate.plots import _pyplot\nplt = _pyplot()\nfig, ax = plt.subplots()\n"
        "print(matplotlib.get_backend(), fig.dpi)"), path)
    with kernel_environment() as cache:
        fresh = os.environ["OBLIVIATE_CACHE"]
        record = execute(path, timeout=120, provenance={"cache": cache})
    assert not Path(fresh).exists(), "the temporary cache is removed"
    executed = nbformat.read(path, as_version=4)
    assert executed.metadata[METADATA_KEY]["code_sha256"] == code_hash(executed) == record["code_sha256"]
    assert record["cache"] == "empty" and staleness(executed) == []
    first, second, third = (cell.outputs for cell in executed.cells[1:])
    # TQDM_DISABLE reaches the kernel, the cache starts empty, and the FutureWarning is not shown
    assert [o.text for o in first] == ["1 []\n"]
    assert [(o.name, o.text) for o in second] == [("stderr", "a real warning\n")]
    assert "inline" in third[0].text and third[0].text.strip().endswith("80.0")
    assert [o.output_type for o in third[1:]] == ["display_data"] and "image/png" in third[1].data


def test_a_notebook_whose_cell_raises_is_left_unchanged(tmp_path):
    path = tmp_path / "broken.ipynb"
    nbformat.write(_notebook("x = 1", "raise KeyError('x')"), path)
    before = path.read_bytes()
    with kernel_environment(str(tmp_path / "cache")), pytest.raises(NotebookError, match="left unchanged"):
        execute(path, timeout=120)
    assert path.read_bytes() == before
