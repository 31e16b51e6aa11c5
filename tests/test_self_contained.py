"""The project is self-contained: no module cites a file outside the repository (papers and repositories only)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
OUTSIDE = re.compile(r"/work/|/home/|/tmp/|ALGORITHMS\.md")


def test_no_source_cites_a_path_outside_the_repository():
    offenders = [f"{path.relative_to(ROOT)}:{i}" for package in ("obliviate", "locate", "edit", "audit")
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, f"cite papers and repositories, not machine paths: {offenders}"
