"""Execute notebooks in place with clean outputs, and record which code the outputs came from (`make notebooks`).

A committed notebook's outputs are evidence only for the code that produced them. After a run the notebook's
metadata holds ``obliviate.code_sha256`` (the sha256 of its code cells' sources, markdown left out: prose does not
change an output) and, for information, the git commit it ran on; `staleness` names what is wrong with a committed
notebook (never executed, code changed since, a cell without its output, a stack trace), and
tests/test_notebooks_fresh.py asserts it finds nothing.

How a run goes (nbclient, Jupyter's reference executor, which nbmake and nbconvert also use):

- from an empty cache: ``OBLIVIATE_CACHE`` is a fresh temporary folder, removed afterwards, unless the caller set
  it, so every figure is computed by the notebook and nothing is read from an earlier run;
- each notebook in its own folder, so ``notebooks/matplotlibrc`` sets the inline figures' dpi (PNG, the inline
  backend's default format);
- no progress bars (``TQDM_DISABLE=1``; any left are stripped from stderr) and no dependency deprecation warnings,
  which name files of the local install;
- no stack traces: a cell that raises stops the run and the notebook is left as it was.

    python -m obliviate.notebooks notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

METADATA_KEY = "obliviate"
MAX_TOTAL_BYTES = 3_000_000
"""Size budget of all committed notebooks together (outputs included)."""

KERNEL_ENV = {"TQDM_DISABLE": "1",
              "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore:IProgress not found"}
"""Environment of the kernel besides the cache: no progress bars, no deprecation notices of dependencies, no
tqdm notice that ipywidgets is missing (it prints the local install's path)."""

# a tqdm-style bar: "45%|####5     | 9/20 [00:01<00:02, 4.5it/s]"
_PROGRESS = re.compile(r"\d+%\|.*\||\|\s*\d+/\d+\s*\[|\d+(\.\d+)?\s*(it/s|s/it)\]")
_TRACEBACK = "Traceback (most recent call last)"


class NotebookError(RuntimeError):
    """A notebook that could not be executed cleanly; the file is left unchanged."""


def code_sources(notebook: Mapping[str, Any]) -> list[str]:
    """The sources of the notebook's code cells, in order (a list-of-lines source joined, as nbformat stores it)."""
    return [cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for cell in notebook["cells"] if cell["cell_type"] == "code"]


def code_hash(notebook: Mapping[str, Any]) -> str:
    """sha256 of the code cells' sources; JSON-encoded so that cell boundaries count (a|bc differs from ab|c)."""
    return hashlib.sha256(json.dumps(code_sources(notebook)).encode("utf-8")).hexdigest()


def strip_progress(text: str) -> str:
    """`text` without progress-bar lines; a line redrawn with carriage returns keeps only what a terminal shows."""
    kept = []
    for line in text.split("\n"):
        shown = [part for part in line.split("\r") if part.strip()]
        visible = shown[-1] if shown else line.replace("\r", "")
        if not _PROGRESS.search(visible):
            kept.append(visible)
    return "\n".join(kept)


def clean_outputs(notebook: Mapping[str, Any]) -> None:
    """Strip progress bars from stderr streams, dropping a stream left empty (in place)."""
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                output["text"] = strip_progress(_text(output["text"]))
                if not output["text"].strip():
                    continue
            outputs.append(output)
        cell["outputs"] = outputs


def stack_traces(notebook: Mapping[str, Any]) -> list[str]:
    """'cell N: ...' for every error output or printed traceback."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
            elif _TRACEBACK in _output_text(output):
                found.append(f"cell {index}: a traceback in its {output.get('name', 'output')}")
    return found


_LOCAL_PATH = re.compile(r"/(?:home|root|work|Users)/|site-packages")


def local_paths(notebook: Mapping[str, Any]) -> list[str]:
    """'cell N: ...' for every output that prints a path of the machine it ran on (a reader's machine differs)."""
    return [f"cell {index}: a local path in its {output.get('name', 'output')}"
            for index, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
            for output in cell.get("outputs", []) if _LOCAL_PATH.search(_output_text(output))]


def staleness(notebook: Mapping[str, Any]) -> list[str]:
    """What makes the notebook's outputs untrustworthy as committed; [] for a fresh one."""
    record = notebook.get("metadata", {}).get(METADATA_KEY, {})
    if "code_sha256" not in record:
        return ["never executed by `make notebooks` (no code hash in its metadata)"]
    problems = []
    if record["code_sha256"] != code_hash(notebook):
        problems.append(f"its code cells changed since it was executed (on commit {record.get('git_commit')})")
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    unexecuted = [i for i, cell in enumerate(cells) if cell.get("execution_count") is None and cell["source"]]
    if unexecuted:
        problems.append(f"code cells {unexecuted} have not been executed")
    if not any(cell.get("outputs") for cell in cells):
        problems.append("it has no outputs")
    return problems + stack_traces(notebook) + local_paths(notebook)


def git_state(folder: Path) -> dict[str, Any]:
    """The commit checked out at `folder` and whether the work tree differs from it (None outside git).

    Taken once before the first notebook runs: each notebook written makes the tree differ."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def execute(path: Path, *, timeout: int | None = 3600, provenance: Mapping[str, Any] | None = None
            ) -> dict[str, Any]:
    """Run the notebook at `path` top to bottom with nbclient and rewrite it with its outputs and record.

    `timeout` is per cell (seconds, None for none); `provenance` (git state, cache) is copied into the record for
    information. The kernel inherits this process's environment (see `kernel_environment`). Raises NotebookError,
    leaving the file as it was, when a cell raises or an output holds a traceback."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from obliviate.results import atomic_write_text

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, record_timing=False,
                            kernel_name=notebook.metadata.get("kernelspec", {}).get("name", "python3"),
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        raise NotebookError(f"{path}: a cell raised; the notebook is left unchanged.\n{error}") from None
    clean_outputs(notebook)
    traces = stack_traces(notebook)
    if traces:
        raise NotebookError(f"{path}: outputs hold stack traces ({'; '.join(traces)}); the notebook is left "
                            f"unchanged. Catch nothing silently: fix the cell.")
    record = {"code_sha256": code_hash(notebook), **(provenance or {}),
              "execution_s": round(time.perf_counter() - start, 1)}
    notebook.metadata[METADATA_KEY] = record
    atomic_write_text(path, nbformat.writes(notebook) + "\n")
    return record


@contextlib.contextmanager
def kernel_environment(cache: str | None = None) -> Iterator[str]:
    """os.environ for the kernels (KERNEL_ENV and OBLIVIATE_CACHE), restored on exit; yields "empty" or "given".

    Without a cache from the caller (argument or environment) a fresh temporary one is made and removed on exit."""
    cache = cache or os.environ.get("OBLIVIATE_CACHE")
    fresh = None if cache else tempfile.mkdtemp(prefix="obliviate-notebooks-cache-")
    saved = {key: os.environ.get(key) for key in [*KERNEL_ENV, "OBLIVIATE_CACHE"]}
    os.environ.update(KERNEL_ENV, OBLIVIATE_CACHE=cache or fresh)
    try:
        yield "given" if cache else "empty"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if fresh:
            shutil.rmtree(fresh, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obliviate.notebooks",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files to execute in place")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (0: no limit)")
    parser.add_argument("--cache", default=None,
                        help="OBLIVIATE_CACHE for the kernels (default: $OBLIVIATE_CACHE, else a fresh empty one)")
    args = parser.parse_args(argv)
    git = git_state(args.notebooks[0].resolve().parent)
    with kernel_environment(args.cache) as cache:
        for path in args.notebooks:
            print(f"executing {path} (cache: {cache}) ...", flush=True)
            try:
                record = execute(path, timeout=args.timeout or None, provenance={**git, "cache": cache})
            except NotebookError as error:
                print(error, file=sys.stderr)
                return 1
            print(f"  {record['execution_s']:.0f} s, {path.stat().st_size / 1e6:.2f} MB, "
                  f"code {record['code_sha256'][:12]}", flush=True)
    total = sum(path.stat().st_size for path in args.notebooks)
    if total > MAX_TOTAL_BYTES:
        print(f"the notebooks take {total / 1e6:.2f} MB, over the {MAX_TOTAL_BYTES / 1e6:.0f} MB budget: "
              f"make fewer or smaller figures (notebooks/matplotlibrc sets their dpi).", file=sys.stderr)
        return 1
    return 0


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _output_text(output: Mapping[str, Any]) -> str:
    """The text of a stream, or the text/plain of a result, of one output."""
    if "text" in output:
        return _text(output["text"])
    return _text(output.get("data", {}).get("text/plain", ""))


if __name__ == "__main__":
    sys.exit(main())
