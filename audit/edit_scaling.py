"""Edits at scale, for the report: how the edit and what it should leave alone move with the number of edits N.

Input is the many-edits record `bench/bench_many_edits.py` writes (``"task": "many-edits"``): per (method, N) the
CounterFact ES / PS / NS over the N edited facts, recall of facts never edited ("retain recall"), held-out
perplexity and the edit's seconds, beside the unedited model's values. The questions are the AlphaEdit paper's
(Fang et al., ICLR 2025, Fig. 1 / Table 1): does quality hold as edits accumulate, and does a null-space constraint
keep the unedited knowledge where plain sequential MEMIT loses it.

`plot_edit_scaling` draws one panel per figure against N (log axis), the unedited model dotted; `scaling_rows` is
the table at each method's largest N. A folder holding such a record can be given to `obliviate compare`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MANY_EDITS_TASK = "many-edits"
PANELS = {"es": "ES (%)", "ps": "PS (%)", "ns": "NS (%)", "retain_recall": "retain recall (unedited facts)",
          "heldout_ppl": "held-out perplexity", "edit_s": "edit seconds"}


def is_many_edits(record: Any) -> bool:
    return isinstance(record, Mapping) and record.get("task") == MANY_EDITS_TASK and "runs" in record


def methods(record: Mapping[str, Any]) -> list[str]:
    """The methods measured, in the order they ran."""
    return list(dict.fromkeys(row["method"] for row in record["runs"]))


def describe(record: Mapping[str, Any]) -> str:
    """One line: the model, blocks, batch size and the null-space setting, for a caption or a title."""
    text = (f"{record['model']}: rewriting N facts at blocks {record['layers']} (sequential batches of "
            f"{record['batch_size']}; retain recall on {record['n_unedited']} facts never edited)")
    corpus = (record.get("covariance") or {}).get("corpus")
    if corpus:
        text += f"; C from {corpus}"
    null = record.get("alphaedit_null_space")
    if null:
        rule = (f"energy ≤ {null['energy']:g} of C" if null.get("energy") else f"eigenvalue < {null['threshold']:g}")
        text += f"; AlphaEdit's null space: {rule}, α = {null['l2']:g}"
        if null.get("n_subjects_out_of_c"):  # c_without_edited_subjects: C never saw these subjects
            also = len(record.get("measured_out_of_c") or [])
            text += (f", C read without {null['n_subjects_out_of_c']} subjects (the edited ones"
                     + (f" and {also} of the measured ones)" if also else ")"))
    kept = record.get("alphaedit-kept_null_space")
    if kept:
        text += f"; alphaedit-kept also keeps {kept.get('n_preserved_facts', 0)} other known facts' keys"
    return text


def scaling_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per method, its row at the largest N it reached, with the unedited model's values beside it."""
    base = record["base"]
    rows = []
    for method in methods(record):
        last = max((r for r in record["runs"] if r["method"] == method), key=lambda r: r["n"])
        cf_base = base["counterfact"].get(str(last["n"]), base["counterfact"].get(last["n"]))  # JSON keys are str
        rows.append({"method": method, "n": last["n"], "n_batches": last["n_batches"],
                     **{key: (cf_base[key], last[key]) for key in ("es", "ps", "ns")},
                     "retain_recall": (base["retain_recall"], last["retain_recall"]),
                     **{f"retain_{part}": (last.get(f"retain_recall_{part}"), last.get(f"n_retain_{part}"))
                        for part in ("same_relation", "other_relations")},
                     "ppl_delta_pct": 100 * (last["heldout_ppl"] - base["heldout_ppl"]) / base["heldout_ppl"],
                     "edit_s": last["edit_s"]})
    return rows


def plot_edit_scaling(record: Mapping[str, Any], path: Path) -> Path:
    """Every figure of `record` against N, one line per method; the unedited model dotted. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from obliviate.results import atomic_save_figure

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, PANELS.items()):
        for method in methods(record):
            rows = sorted((r for r in record["runs"] if r["method"] == method), key=lambda r: r["n"])
            ax.plot([r["n"] for r in rows], [r[key] for r in rows], marker="o", label=method)
        if key in ("retain_recall", "heldout_ppl"):
            ax.axhline(record["base"][key], color="grey", linestyle=":", label="unedited")
        elif key != "edit_s":  # the unedited model's CounterFact figure on the same N facts
            ns = sorted(record["base"]["counterfact"], key=int)
            ax.plot([int(n) for n in ns], [record["base"]["counterfact"][n][key] for n in ns], color="grey",
                    linestyle=":", marker=".", label="unedited")
        ax.set_xscale("log")
        ax.set_xlabel("edited facts N")
        ax.set_title(label)
    axes.flat[0].legend()
    fig.suptitle(describe(record), fontsize=10)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def scaling_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The `scaling_rows` as an HTML table: each figure as unedited → edited."""
    import html

    def pair(values: tuple[float, float], digits: int = 1) -> str:
        return f"{values[0]:.{digits}f} → {values[1]:.{digits}f}"

    def part(value: tuple[float | None, int | None]) -> str:
        return "–" if value[0] is None else f"{value[0]:.2f} ({value[1]})"

    split = any(r["retain_same_relation"][1] is not None for r in rows)  # bench runs before the split lack it
    head = ("<table><thead><tr><th class='l'>method</th><th>N</th><th>batches</th><th>ES</th><th>PS</th>"
            "<th>NS</th><th>retain recall</th>"
            + ("<th>retain: edited relations (n)</th><th>retain: other relations (n)</th>" if split else "")
            + "<th>Δ perplexity %</th><th>edit s</th></tr></thead><tbody>")
    body = [f"<tr><td class='l'>{html.escape(r['method'])}</td><td>{r['n']}</td><td>{r['n_batches']}</td>"
            f"<td>{pair(r['es'])}</td><td>{pair(r['ps'])}</td><td>{pair(r['ns'])}</td>"
            f"<td>{pair(r['retain_recall'], 2)}</td>"
            + (f"<td>{part(r['retain_same_relation'])}</td><td>{part(r['retain_other_relations'])}</td>" if split
               else "")
            + f"<td>{r['ppl_delta_pct']:+.1f}</td><td>{r['edit_s']:.0f}</td></tr>"
            for r in rows]
    return head + "".join(body) + "</tbody></table>"
