"""Trajectories: each method's operating-point search drawn against its knob, and every method on one plane.

TOFU (Maini et al. 2024; locuslab/tofu) compares unlearning methods by the path each traces through forget quality
and model utility as its strength grows, not by one point per method. The edit stage's search (edit/search.py)
keeps every knob value it evaluated, so the path is already recorded; this module reads it and draws it:

- one figure per method: forget recall, retain recall and each trajectory attack's recovery against the knob
  value (log axis for a log-scaled knob, stronger to the right), Δ perplexity in a panel below; the chosen point,
  the target forget recall and the oracle's forget recall marked;
- one overlay: retain recall (utility) against forget recall, one line per method through its points from the
  weakest to the strongest setting, the oracle's forget recall as a vertical line, the region that reaches the
  target shaded.

The search record is read from the audit record (the audit stage copies it there) or else from the run's edit
record, so a run audited before the copy existed still shows its trajectory. audit/report.py embeds the figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edit.search import NOT_REACHED



def operating_point(run: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The operating-point search behind an audit record: its own copy, else its edit's (None: no search ran)."""
    metrics = record.get("metrics", {})
    found = metrics.get("operating_point")
    if found is None:
        # the audit of edit <label> is audit-<label>, its metrics' "method" is that label (audit/stage.py)
        edit = run.get(f"edit-{metrics.get('method')}")
        found = edit.get("metrics", {}).get("operating_point") if isinstance(edit, Mapping) else None
    return dict(found) if isinstance(found, Mapping) and found.get("status") else None


def knob_name(found: Mapping[str, Any]) -> str | None:
    return (found.get("knob") or {}).get("field")


def format_value(value: Any) -> str:
    """A knob value as the table and captions show it (log-scaled knobs span decades: three significant digits)."""
    if value is None:
        return "config"  # a method without a knob is evaluated at its configuration
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.3g}"


def status_text(found: Mapping[str, Any]) -> str:
    """The status as the table says it; a method that misses the operating point is audited at its best point,
    so its row says where its figures come from."""
    text = str(found["status"])
    if text == NOT_REACHED:
        text += " (row at its best point)"
    if found.get("budget_exhausted"):
        text += ", evaluation budget spent"
    return text


def ordered_points(found: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evaluated points from the weakest setting to the strongest (the search tries them out of order)."""
    points = [dict(p) for p in found.get("points", [])]
    if any(p.get("value") is None for p in points):
        return points
    stronger_lower = (found.get("knob") or {}).get("stronger") == "lower"
    return sorted(points, key=lambda p: p["value"], reverse=stronger_lower)


def _recovery_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for point in points:
        for key in point.get("extra", {}):
            if key.startswith("recovery_"):
                seen.setdefault(key[len("recovery_"):], None)
    return list(seen)


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Through the atomic writer (a crash never leaves half a plot), then free the figure."""
    from obliviate.results import atomic_save_figure

    atomic_save_figure(fig, path, dpi=110)
    _pyplot().close(fig)
    return Path(path)


def plot_trajectory(found: Mapping[str, Any], label: str, path: Path) -> Path | None:
    """The method's search against its knob (see the module docstring); None for a method without a knob."""
    knob = found.get("knob")
    points = ordered_points(found)
    if not knob or not points or any(p.get("value") is None for p in points):
        return None
    plt = _pyplot()
    xs = [p["value"] for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.8, 5.4), sharex=True, height_ratios=[3, 1.2])
    top.plot(xs, [_nan(p["forget_recall"]) for p in points], "o-", color="C0", label="forget recall")
    top.plot(xs, [_nan(p["retain_recall"]) for p in points], "s-", color="C2", label="retain recall")
    for i, attack in enumerate(_recovery_names(points)):
        top.plot(xs, [_nan(p.get("extra", {}).get(f"recovery_{attack}")) for p in points], "^--", ms=4,
                 color=f"C{(4 + i) % 10}", label=f"{attack} recovery")
    target = found.get("target_forget_recall")
    if target is not None:
        top.axhline(target, color="C3", ls="--", lw=1, label=f"target forget recall {target:.2f}")
    oracle = found.get("oracle_forget_recall")
    if oracle is not None:
        top.axhline(oracle, color="k", ls=":", lw=1, label=f"oracle forget recall {oracle:.2f}")
    chosen = found.get("chosen") or {}
    if chosen.get("value") is not None:
        for ax in (top, bottom):
            ax.axvline(chosen["value"], color="grey", lw=1, alpha=0.6)
        reached = found["status"] != NOT_REACHED
        top.plot([chosen["value"]], [_nan(chosen.get("forget_recall"))], "*", ms=14, color="C0", mec="k",
                 label=f"{'chosen' if reached else 'best point (does not reach)'}: {format_value(chosen['value'])}")
    # the search records perplexity as edited / base; the table shows the change in %, so does the plot
    bottom.plot(xs, [100 * (_nan(p.get("perplexity")) - 1) for p in points], "o-", color="C1")
    bottom.axhline(0, color="grey", lw=1)
    bottom.set_ylabel("Δ perplexity %")
    log = knob.get("scale") == "log" and all(x > 0 for x in xs)
    if log:
        bottom.set_xscale("log")
    low, high = knob.get("low"), knob.get("high")
    if low is not None and high is not None and (not log or low > 0):
        # the whole searched range, so a search that stopped at one end shows where that end is
        pad = 0.04 * (high - low)
        bottom.set_xlim(low / 1.3 if log else low - pad, high * 1.3 if log else high + pad)
    if knob.get("stronger") == "lower":
        bottom.invert_xaxis()  # stronger always to the right, so every method's figure reads the same way
    bottom.set_xlabel(f"{knob.get('field')} (stronger →)")
    top.set_ylabel("recall / recovered score")
    top.set_ylim(-0.03, 1.05)
    top.set_title(f"{label}: {found['status']}")
    top.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_overlay(series: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> Path | None:
    """Retain recall against forget recall, one line per (label, search) through its points in knob order."""
    series = [(label, found) for label, found in series if found.get("points")]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    # one band / line per distinct level: runs of one config share them, runs of several may not
    targets = sorted({round(f["target_forget_recall"], 6) for _, f in series if f.get("target_forget_recall")
                      is not None})
    for i, target in enumerate(targets):
        ax.axvspan(0, target, color="C2", alpha=0.10, lw=0, label="reaches the target" if i == 0 else None)
    oracles = sorted({round(f["oracle_forget_recall"], 6) for _, f in series if f.get("oracle_forget_recall")
                      is not None})
    for i, oracle in enumerate(oracles):
        ax.axvline(oracle, color="k", ls=":", lw=1, label="oracle forget recall" if i == 0 else None)
    for label, found in series:
        points = ordered_points(found)
        xs, ys = [_nan(p["forget_recall"]) for p in points], [_nan(p["retain_recall"]) for p in points]
        (line,) = ax.plot(xs, ys, "o-", ms=4, label=f"{label} ({found['status']})")
        ax.plot(xs[:1], ys[:1], "o", ms=8, mfc="white", color=line.get_color())  # the weakest setting
        chosen = found.get("chosen") or {}
        if chosen:
            ax.plot([_nan(chosen.get("forget_recall"))], [_nan(chosen.get("retain_recall"))], "*", ms=14,
                    color=line.get_color(), mec="k")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("forget recall (lower: more forgotten)")
    ax.set_ylabel("retain recall (utility)")
    ax.set_title("Trajectories: utility against forgetting")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def slug(text: str) -> str:
    """A file-name-safe form of a method label."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return safe.strip("_") or "method"
