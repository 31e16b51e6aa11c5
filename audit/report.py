"""The comparison report: one self-contained HTML page (and a markdown table) over finished runs.

Input: a list of runs, each a dict mapping stage name → stage record (the JSON of `obliviate.results.StageRecord`),
optionally with ``"run_dir"`` (where the run's artefacts live) and ``"name"``; `load_run(folder)` builds one from a
run folder. Every record whose ``stage`` starts with ``audit`` is one row of the comparison (one edit method); its
``metrics`` are read under the keys that `audit_metrics` writes, so the audit stage builds them with that function:

    method                       the edit's label
    verdict_counts               {erased, suppressed, intact: n}
    intact_oracle_answers        how many intact targets the never-learned oracle answers too (its prior: such a
                                 target cannot show a removal); absent without an oracle
    recovery                     {attack: mean recovered score on the edited model}
    recovery_oracle              {attack: mean recovered score on the oracle} (absent without one)
    margins                      {attack: margin}
    collateral                   CollateralReport.to_metrics() (forget/retain recall, NS, NS same-relation,
                                 perplexity; base/edited/delta; the table shows each NS as base → edited)
    representation               RepresentationComparison.to_metrics() (depths, probe accuracies, CKA per depth)
    operating_point              the edit's operating-point search record (edit/search.py), copied by the audit
                                 stage; absent when no search ran (then the run's edit record is read instead)

Plots (matplotlib Agg, PNG files next to report.html, referenced relatively, so the folder opens offline): mean
recovery by attack and method (grouped bars, the oracle's level marked), verdict counts per method, probe accuracy
by depth (base vs each edit) and linear CKA by depth; where the edit stage searched an operating point, the
trajectories (audit/trajectory.py: one figure per method against its knob, and utility against forgetting across
methods), and the table gains the knob, the value reached and the search's status. Trace heatmaps that the runs'
locate / audit stages saved (PNG artefacts with "trace" in the name) are copied in, before (locate, base model) and
after (audit, edited). A run folder holding bench/bench_many_edits.py's JSON adds a "Many edits" section: the
curve of every figure against the number of edits and a table at each method's largest N (`audit.edit_scaling`).
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.edit_scaling import describe, is_many_edits, plot_edit_scaling, scaling_rows, scaling_table_html
from audit.trajectory import format_value, knob_name, operating_point, plot_overlay, plot_trajectory, slug, \
    status_text
from audit.verdict import VERDICTS

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.note{color:#555;font-size:.9em}
figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555}
"""


# --------------------------------------------------------------------------------------------------- the schema
def audit_metrics(method: str, verdicts=None, edited_attacks: Sequence[Any] = (),
                  oracle_attacks: Sequence[Any] | None = None, collateral=None, representation=None,
                  sampled: Mapping[str, Any] | None = None,
                  operating_point: Mapping[str, Any] | None = None,
                  oracle_recalled: Mapping[int, bool] | None = None) -> dict[str, Any]:
    """The audit record's metrics in the form the report reads (see the module docstring)."""
    metrics: dict[str, Any] = {"method": method}
    if verdicts is not None:
        metrics["verdict_counts"] = verdicts.counts()
        if oracle_recalled:
            metrics["intact_oracle_answers"] = sum(1 for t in verdicts.targets
                                                   if t.verdict == "intact" and oracle_recalled.get(t.case_id))
        metrics["margins"] = dict(verdicts.margins)
        metrics["reference_kind"] = verdicts.reference_kind
        metrics["pooled_sites"] = list(getattr(verdicts, "pooled_sites", []))
    if edited_attacks:
        metrics["recovery"] = {a.attack: _mean(a.recovered.values()) for a in edited_attacks}
    if oracle_attacks:
        metrics["recovery_oracle"] = {a.attack: _mean(a.recovered.values()) for a in oracle_attacks}
    if collateral is not None:
        metrics["collateral"] = collateral.to_metrics()
    if representation is not None:
        metrics["representation"] = representation.to_metrics()
    if sampled is not None:
        metrics["sampled"] = dict(sampled)
    if operating_point is not None:
        metrics["operating_point"] = dict(operating_point)
    return metrics


def sampling_note(n_retain: int, of_retain: int, n_texts: int, of_texts: int, *, seed: int) -> dict[str, Any]:
    """What the collateral and representation figures read, when audit.max_retain / max_heldout_texts bound them."""
    return {"retain": n_retain, "retain_of": of_retain, "retain_how": f"seeded random sample (seed {seed})"
            if n_retain < of_retain else "all", "heldout_texts": n_texts, "heldout_texts_of": of_texts,
            "heldout_texts_how": "the first lines of the file" if n_texts < of_texts else "all"}


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run folder's stage records, keyed by stage name, with "run_dir" and "name" added, and under
    ``"many_edits"`` the many-edits records (`audit.edit_scaling`) found there."""
    folder = Path(folder)
    run: dict[str, Any] = {"run_dir": str(folder), "name": folder.name}
    for path in sorted(folder.glob("*.json")):
        if path.name == "config.json":
            continue
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "stage" in record:
            run[record["stage"]] = record
        elif is_many_edits(record):
            run.setdefault("many_edits", []).append({**record, "file": path.name})
    return run


def method_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per audit record of every run: the figures of the comparison table."""
    rows = []
    for index, run in enumerate(runs):
        run_name = str(run.get("name") or Path(str(run.get("run_dir", f"run{index}"))).name)
        for key, record in run.items():
            if not (isinstance(record, Mapping) and str(record.get("stage", "")).startswith("audit")):
                continue
            metrics = record.get("metrics", {})
            method = str(metrics.get("method") or record.get("config", {}).get("method") or key)
            collateral = metrics.get("collateral", {})
            counts = metrics.get("verdict_counts", {})
            rows.append({
                "run": run_name, "method": method, "stage": record.get("stage"),
                **{v: counts.get(v) for v in VERDICTS},
                "intact_oracle_answers": metrics.get("intact_oracle_answers"),
                "recovery": dict(metrics.get("recovery", {})),
                "recovery_oracle": dict(metrics.get("recovery_oracle", {})),
                "margins": dict(metrics.get("margins", {})),
                "forget_recall": collateral.get("forget_recall_edited"),
                "forget_recall_base": collateral.get("forget_recall_base"),
                "retain_recall": collateral.get("retain_recall_edited"),
                "retain_recall_delta": collateral.get("retain_recall_delta"),
                "ppl_base": collateral.get("heldout_perplexity_base"),
                "ppl_delta": collateral.get("heldout_perplexity_delta"),
                "ns": collateral.get("neighborhood_ns_edited"),
                "ns_base": collateral.get("neighborhood_ns_base"),
                "ns_delta": collateral.get("neighborhood_ns_delta"),
                "ns_same_relation": collateral.get("neighborhood_ns_same_relation_edited"),
                "ns_same_relation_base": collateral.get("neighborhood_ns_same_relation_base"),
                "representation": metrics.get("representation"),
                "operating_point": operating_point(run, record),
                "relearn_check": metrics.get("relearn_check"),
                "record": record, "run_dir": run.get("run_dir"),
            })
    return rows


def summary_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per method for the terminal: its verdict counts, and forget / retain recall where recorded.

    From the same rows as the table, so the terminal and report.html cannot disagree."""
    rows = method_rows(runs)
    multi = len({r["run"] for r in rows}) > 1
    lines = []
    for row in rows:
        parts = [", ".join(f"{row[v]} {v}" for v in VERDICTS)] if any(row[v] is not None for v in VERDICTS) else []
        if row.get("intact_oracle_answers"):
            parts[0] += f" ({row['intact_oracle_answers']} of them the oracle answers too)"
        for name in ("forget_recall", "retain_recall"):
            if row[name] is not None:
                parts.append(f"{name.replace('_', ' ')} {_fmt(row[name])}")
        if row["operating_point"]:
            knob, value, status = _search_cells(row)
            parts.append(f"operating point {status} at {knob}={value}")
        if row["relearn_check"]:
            parts.append(f"relearned p_true suppressed / erased {_relearn_cell(row)}")
        lines.append(f"{_label(row, multi)}: {'; '.join(parts) or 'no verdicts or recall recorded'}")
    return lines


# --------------------------------------------------------------------------------------------------- the tables
def _attacks(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for name in row["recovery"]:
            seen.setdefault(name, None)
    return list(seen)


def _fmt(value: Any, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _before_after(base: Any, edited: Any, digits: int = 1) -> str:
    """'pre-edit → edited' (a CounterFact figure means little without the base model's own: its NS is not 100)."""
    if base is None:
        return _fmt(edited, digits)
    return f"{_fmt(base, digits)} → {_fmt(edited, digits)}"


def _search_cells(row: Mapping[str, Any]) -> list[str]:
    """Knob, value reached (or the best point's) and status; dashes for a row without a search."""
    found = row["operating_point"]
    if not found:
        return ["–"] * 3
    return [knob_name(found) or "–", format_value((found.get("chosen") or {}).get("value")), status_text(found)]


def _relearn_cell(row: Mapping[str, Any]) -> str:
    """'suppressed / erased (the same on the never-taught models, the largest of them)': mean relearned p_true over
    the targets of each verdict; a group above every never-taught model's is still held (audit/relearn_speed.py)."""
    check = row["relearn_check"]
    if not check:
        return "–"
    references = [figures for name, figures in check.items() if name != "edited"]

    def largest(group: str) -> float | None:
        values = [r[group] for r in references if r.get(group) is not None]
        return max(values) if values else None

    edited = check.get("edited", {})
    return (f"{_fmt(edited.get('suppressed'))} / {_fmt(edited.get('erased'))} "
            f"({_fmt(largest('suppressed'))} / {_fmt(largest('erased'))})")


def _verdict_cell(row: Mapping[str, Any], verdict: str) -> str:
    """The count; for intact, with how many of them the never-learned oracle answers too ("11 (oracle 11)")."""
    also = row.get("intact_oracle_answers")
    return _fmt(row[verdict]) + (f" (oracle {also})" if verdict == "intact" and also else "")


@dataclass(frozen=True)
class _Columns:
    """The table's attack columns and which optional columns it has: each is left out where no row recorded it."""

    attacks: tuple[str, ...]
    same_relation: bool
    """Same-relation neighbours' NS (absent in the world's runs, whose neighbours share the answer)."""
    searched: bool
    """Knob / value / status of an operating-point search."""
    relearned: bool
    """The audit's relearning check (`audit.relearn_check_steps`)."""

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> _Columns:
        return cls(attacks=tuple(_attacks(rows)),
                   same_relation=any(row["ns_same_relation"] is not None for row in rows),
                   searched=any(row["operating_point"] for row in rows),
                   relearned=any(row["relearn_check"] for row in rows))

    def headers(self) -> list[str]:
        return ["run", "method", *(["knob", "value", "status"] if self.searched else []), *VERDICTS,
                *(f"{a} recovery" for a in self.attacks), "forget recall", "retain recall", "Δ perplexity %",
                "NS % (base → edited)", *(["NS same-relation % (base → edited)"] if self.same_relation else []),
                *(["relearned p_true: suppressed / erased (never-taught)"] if self.relearned else [])]

    def cells(self, row: Mapping[str, Any]) -> list[str]:
        cells = [row["run"], row["method"], *(_search_cells(row) if self.searched else []),
                 *(_verdict_cell(row, v) for v in VERDICTS)]
        for attack in self.attacks:
            value = row["recovery"].get(attack)
            oracle = row["recovery_oracle"].get(attack)
            cells.append(_fmt(value) + (f" ({_fmt(oracle)})" if oracle is not None else ""))
        base, delta = row["ppl_base"], row["ppl_delta"]
        relative = 100 * delta / base if base and delta is not None else None  # the issues' targets are relative
        cells += [_fmt(row["forget_recall"]), _fmt(row["retain_recall"]), _fmt(relative, 1, signed=True),
                  _before_after(row["ns_base"], row["ns"])]
        cells += [_before_after(row["ns_same_relation_base"], row["ns_same_relation"])] if self.same_relation else []
        return cells + ([_relearn_cell(row)] if self.relearned else [])


def markdown_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The comparison table as GitHub markdown (for the README)."""
    rows = method_rows(runs)
    columns = _Columns.of(rows)
    headers = columns.headers()
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(columns.cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = _Columns.of(rows)
    headers = columns.headers()
    text = {"run", "method", "knob", "status"}  # left-aligned: words, not figures
    head = "".join(f'<th class="{"l" if h in text else ""}">{html.escape(h)}</th>' for h in headers)
    body = []
    for row in rows:
        body.append("<tr>" + "".join(f'<td class="{"l" if h in text else ""}">{html.escape(c)}</td>'
                                     for h, c in zip(headers, columns.cells(row))) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------------------------------- the plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: Mapping[str, Any], multi_run: bool) -> str:
    return f"{row['run']}/{row['method']}" if multi_run else row["method"]


def _save_png(fig, path: Path) -> Path:
    """Through the atomic writer (a crash never leaves half a plot), then free the figure."""
    from obliviate.results import atomic_save_figure

    atomic_save_figure(fig, path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_recovery(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Grouped bars: mean recovered score per attack (groups) and method (bars); the oracle's level as a tick."""
    attacks = _attacks(rows)
    if not attacks:
        return None
    plt = _pyplot()
    multi = len({r["run"] for r in rows}) > 1
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(attacks) * max(1, len(rows)) * 0.5), 3.8))
    for i, row in enumerate(rows):
        xs = [a + (i - (len(rows) - 1) / 2) * width for a in range(len(attacks))]
        values = [_nan(row["recovery"].get(a)) for a in attacks]
        ax.bar(xs, values, width=width, label=_label(row, multi))
    oracle_drawn = False
    for a, attack in enumerate(attacks):
        levels = [r["recovery_oracle"].get(attack) for r in rows if r["recovery_oracle"].get(attack) is not None]
        if levels:
            ax.hlines(sum(levels) / len(levels), a - 0.45, a + 0.45, colors="k", linestyles="--",
                      label=None if oracle_drawn else "oracle (world-retain)")
            oracle_drawn = True
    ax.set_xticks(range(len(attacks)), attacks)
    ax.set_ylabel("mean recovered score")
    ax.set_ylim(0, 1.05)
    ax.set_title("Recovery by attack and method")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_verdicts(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Stacked bars of verdict counts per method."""
    if not any(row[v] is not None for row in rows for v in VERDICTS):
        return None
    plt = _pyplot()
    multi = len({r["run"] for r in rows}) > 1
    labels = [_label(r, multi) for r in rows]
    colours = {"erased": "#2b8a3e", "suppressed": "#e8a33d", "intact": "#c92a2a"}
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows)), 3.5))
    bottom = [0.0] * len(rows)
    for verdict in VERDICTS:
        counts = [float(r[verdict] or 0) for r in rows]
        ax.bar(labels, counts, bottom=bottom, color=colours[verdict], label=verdict)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_ylabel("targets")
    ax.set_title("Verdicts per method")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_by_depth(rows: Sequence[Mapping[str, Any]], key: str, path: Path, *, ylabel: str, title: str,
                  base_key: str | None = None, chance_key: str | None = None) -> Path | None:
    """One line per method of representation[key] by depth (and the base model's curve once per run)."""
    with_data = [r for r in rows if r["representation"] and r["representation"].get(key)]
    if not with_data:
        return None
    plt = _pyplot()
    multi = len({r["run"] for r in rows}) > 1
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    drawn_base: set[str] = set()
    for row in with_data:
        rep = row["representation"]
        depths = rep.get("depths") or list(range(len(rep[key])))
        if base_key and rep.get(base_key) and row["run"] not in drawn_base:
            ax.plot(depths, [_nan(v) for v in rep[base_key]], "k--", lw=2,
                    label=f"base{' ' + row['run'] if multi else ''}")
            drawn_base.add(row["run"])
        ax.plot(depths, [_nan(v) for v in rep[key]], marker="o", ms=3, label=_label(row, multi))
    chance = [r["representation"].get(chance_key) for r in with_data] if chance_key else []
    chance = [c for c in chance if c is not None]
    if chance:
        ax.axhline(max(chance), color="grey", lw=1, ls=":", label="chance")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("depth (0 = embeddings)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return _save_png(fig, path)


# --------------------------------------------------------------------------------------------------- the page
def _trace_pngs(runs: Sequence[Mapping[str, Any]], per_stage: int = 3) -> list[tuple[str, str, Path]]:
    """(run, stage, path) of PNG artefacts with "trace" in the name, locate (before) then audit (after).

    At most `per_stage` per stage of a run (the locate stage draws one per kind and target; the first target's
    kinds show the picture, the rest are in the run folder)."""
    found = []
    for index, run in enumerate(runs):
        root = run.get("run_dir")
        if not root:
            continue
        name = str(run.get("name") or Path(str(root)).name)
        for stage in sorted((k for k, v in run.items() if isinstance(v, Mapping) and "artefacts" in v),
                            key=lambda s: (not s.startswith("locate"), s)):
            pngs = [Path(root) / a for a in run[stage].get("artefacts", [])]
            pngs = [p for p in pngs if p.suffix.lower() == ".png" and "trace" in p.name.lower() and p.is_file()]
            found += [(name, stage, path) for path in pngs[:per_stage]]
    return found


def write_report(runs: Sequence[Mapping[str, Any]], out_dir: str | Path, *, title: str = "obliviate comparison"
                 ) -> Path:
    """Write report.html (+ PNGs under plots/) comparing the runs' audit records; returns the HTML's path."""
    out_dir = Path(out_dir)
    plots = out_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    rows = method_rows(runs)
    figures: list[tuple[str, Path | None]] = [
        ("Mean recovered score per attack; dashed: the oracle under the same attack.",
         plot_recovery(rows, plots / "recovery.png")),
        ("Verdict counts per method.", plot_verdicts(rows, plots / "verdicts.png")),
        ("Fresh-probe accuracy decoding the targets' attribute, by depth (dashed: base model).",
         plot_by_depth(rows, "probe_edited", plots / "probe_accuracy.png", ylabel="probe accuracy",
                       title="Probe accuracy by depth", base_key="probe_base", chance_key="chance")),
        ("Linear CKA between base and edited activations, by depth (1 = unchanged geometry).",
         plot_by_depth(rows, "cka", plots / "cka.png", ylabel="linear CKA", title="CKA(base, edited) by depth")),
    ]
    traces = []
    for i, (run_name, stage, source) in enumerate(_trace_pngs(runs)):
        target = plots / f"trace_{i:02d}_{stage.replace('/', '_')}_{source.name}"
        shutil.copyfile(source, target)
        traces.append((f"{run_name} · {stage} ({'before' if stage.startswith('locate') else 'after'})", target))
    trajectories = _trajectory_figures(rows, plots)

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Comparison</h2>")
    if rows:
        parts.append(_html_table(rows))
        parts.append("<p class='note'>Verdicts per target: <b>erased</b> (no attack recovers it beyond the oracle "
                     "under the same attack), <b>suppressed</b> (some attack does, by more than its margin), "
                     "<b>intact</b> (still top-1; \"(oracle n)\": n of them the never-learned oracle answers "
                     "too, so they cannot show a removal). Recovery: mean recovered score on the edited model (the "
                     "oracle's in brackets). Recall: top-1 on the forget targets and on the retain split. "
                     "Δ perplexity %: held-out perplexity change, (edited − base) / base. NS: CounterFact "
                     "neighbourhood specificity on the targets' neighbours that share their answer; NS "
                     "same-relation (where present): on other subjects of the relation, their own answer "
                     "against the new one. Both are shown as the base model's value → the edited model's: "
                     "the base's is rarely 100.</p>")
        parts += [_sampling_line(row) for row in rows if row["record"].get("metrics", {}).get("sampled")]
        margins = {a: m for r in rows for a, m in r["margins"].items()}
        if margins:
            parts.append("<p class='note'>Margins: " + ", ".join(f"{html.escape(a)} {m:.3f}"
                                                                   for a, m in margins.items()) + "</p>")
        if _Columns.of(rows).searched:
            parts.append("<p class='note'>Knob, value, status: the edit stage searched each method's strength "
                         "knob for the weakest value whose forget recall meets the target within the retain "
                         "budget; value is the one it reached. A method that <b>does not reach</b> was edited and "
                         "audited at its best point, so its verdicts and figures are that point's, not the "
                         "operating point's.</p>")
    else:
        parts.append("<p>No audit records in these runs.</p>")
    drawn = [(caption, path) for caption, path in figures if path is not None]
    if drawn:
        parts.append("<h2>Plots</h2>")
        parts += [_figure(caption, path, out_dir) for caption, path in drawn]
    if trajectories:
        parts.append("<h2>Trajectories</h2>")
        parts.append("<p class='note'>Each method's operating-point search: every knob value it evaluated, the "
                     "weakest to the strongest setting. Star: the chosen point (or, for a method that does not "
                     "reach the target, its best point, where its row of the table was audited); dashed: the "
                     "target forget recall; dotted: the oracle's forget recall. Overlay: retain recall against "
                     "forget recall, hollow circle at the weakest setting, the region that reaches the target "
                     "shaded.</p>")
        parts += [_figure(caption, path, out_dir) for caption, path in trajectories]
    scaling = [(run, record) for run in runs for record in run.get("many_edits", [])]
    if scaling:
        parts.append("<h2>Many edits</h2><p class='note'>Rewriting N facts (bench/bench_many_edits.py): CounterFact "
                     "ES / PS / NS over the N edited facts, recall of facts never edited, held-out perplexity; "
                     "each as the unedited model's value → the edited model's, at each method's largest N.</p>")
        for i, (run, record) in enumerate(scaling):
            name = f"{run.get('name', '')} / {record.get('file', 'many edits')}"
            parts.append(f"<h3>{html.escape(name)}</h3>" + scaling_table_html(scaling_rows(record)))
            path = plot_edit_scaling(record, plots / f"many_edits_{i:02d}_{slug(record['model'])}.png")
            parts.append(_figure(f"{describe(record)}.", path, out_dir))
    ablations = _subject_ablation_html(runs)
    if ablations:
        parts.append("<h2>Subject ablation</h2><p class='note'>Recall of the traced targets before and after every "
                     "MLP write at their subjects' tokens, in the blocks named, is replaced by the mean write of names "
                     "the model never saw (locate/subject_ablation.py): what is left is answered without the "
                     "subject's enrichment, so an erasure at the subject leaves at least that much.</p>")
        parts.append(ablations)
    if traces:
        parts.append("<h2>Causal traces</h2>")
        parts += [_figure(caption, path, out_dir) for caption, path in traces]
    parts.append("<h2>Per-target verdicts</h2>")
    for row in rows:
        targets = [t for t in row["record"].get("targets", []) if "verdict" in t]
        if not targets:
            continue
        parts.append(f"<h3>{html.escape(row['run'])} / {html.escape(row['method'])}</h3><table><thead><tr>"
                     "<th>case</th><th class='l'>verdict</th><th class='l'>why</th></tr></thead><tbody>")
        parts += [f"<tr><td>{t.get('case_id', '')}</td><td class='l'>{html.escape(str(t['verdict']))}</td>"
                  f"<td class='l'>{html.escape(str(t.get('reason', '')))}</td></tr>" for t in targets]
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    path = out_dir / REPORT_NAME
    from obliviate.results import atomic_write_text

    atomic_write_text(path, "\n".join(parts))
    return path


def _subject_ablation_html(runs: Sequence[Mapping[str, Any]]) -> str:
    """A table of each run's recorded subject ablations (the locate method `subject_ablation`); "" if none."""
    rows = []
    for run in runs:
        found = run.get("locate", {}).get("metrics", {}).get("subject_ablation", {})
        for ablation in found.get("ablations", []):
            blocks = ablation["blocks"]
            named = f"{blocks[0]}–{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])
            rows.append(f"<tr><td class='l'>{html.escape(str(run.get('name', '')))}</td><td>{named}</td>"
                        f"<td>{_fmt(ablation['recall_before'], 3)}</td><td>{_fmt(ablation['recall_ablated'], 3)}</td>"
                        f"</tr>")
    if not rows:
        return ""
    return ("<table><thead><tr><th class='l'>run</th><th>blocks</th><th>recall</th><th>recall, subject unknown</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _trajectory_figures(rows: Sequence[Mapping[str, Any]], plots: Path) -> list[tuple[str, Path]]:
    """(caption, path) of each searched method's trajectory, then the overlay across methods; [] without a search."""
    searched = [row for row in rows if row["operating_point"]]
    multi = len({r["run"] for r in rows}) > 1
    drawn = []
    for i, row in enumerate(searched):
        label, found = _label(row, multi), row["operating_point"]
        path = plot_trajectory(found, label, plots / f"trajectory_{i:02d}_{slug(label)}.png")
        if path is not None:
            drawn.append((f"{label}: recall, recovery and Δ perplexity against {knob_name(found)} "
                          f"({status_text(found)}).", path))
    overlay = plot_overlay([(_label(row, multi), row["operating_point"]) for row in searched],
                           plots / "trajectories.png")
    if overlay is not None:
        drawn.append(("Retain recall (utility) against forget recall, one line per method in knob order.", overlay))
    return drawn


def _sampling_line(row: Mapping[str, Any]) -> str:
    sampled = row["record"]["metrics"]["sampled"]
    return (f"<p class='note'>{html.escape(row['run'])} / {html.escape(row['method'])}: collateral and "
            f"representation read {sampled['retain']} of {sampled['retain_of']} retain facts "
            f"({html.escape(sampled['retain_how'])}) and {sampled['heldout_texts']} of {sampled['heldout_texts_of']} "
            f"held-out texts ({html.escape(sampled['heldout_texts_how'])}).</p>")


def _figure(caption: str, path: Path, out_dir: Path) -> str:
    rel = path.relative_to(out_dir).as_posix()
    return (f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _mean(values) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else float("nan")


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)
