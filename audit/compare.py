"""`obliviate compare RUN…`: the side-by-side report (report.html + PNGs) over finished run folders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from audit.report import load_run, markdown_table, summary_lines, write_report
from obliviate.results import atomic_write_text


def run(runs: Sequence[Path], out: Path, *, echo: Callable[[str], None] | None = print) -> Path:
    """Write report.html, plots/ and table.md under `out`; returns the report's path.

    `echo` gets the report's path and one line per method, so a terminal user sees the outcome without opening
    the page (None: silent)."""
    loaded = [load_run(folder) for folder in runs]
    missing = [str(folder) for folder, run in zip(runs, loaded)
               if not any(k.startswith("audit") or k == "many_edits" for k in run)]
    if missing:
        raise SystemExit(f"obliviate compare: no audit results in {', '.join(missing)}; run `obliviate audit` first "
                         f"(or put bench/bench_many_edits.py's JSON there).")
    report = write_report(loaded, out)
    table = Path(out) / "table.md"
    atomic_write_text(table, markdown_table(loaded) + "\n")
    if echo is not None:
        echo(f"report: {report}\ntable:  {table}")
        for line in summary_lines(loaded):
            echo(f"  {line}")
    return report
