"""`obliviate compare RUN…`: the side-by-side report (report.html + PNGs) over finished run folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audit.report import load_run, markdown_table, write_report
from obliviate.results import atomic_write_text


def run(runs: Sequence[Path], out: Path) -> Path:
    loaded = [load_run(folder) for folder in runs]
    missing = [str(folder) for folder, run in zip(runs, loaded) if not any(k.startswith("audit") for k in run)]
    if missing:
        raise SystemExit(f"obliviate compare: no audit results in {', '.join(missing)}; run `obliviate audit` first.")
    report = write_report(loaded, out)
    atomic_write_text(Path(out) / "table.md", markdown_table(loaded) + "\n")
    return report
