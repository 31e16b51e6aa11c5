"""Figures of the locate stage: ROME-style causal-trace heatmaps and logit-lens curves (matplotlib, Agg backend).

The heatmap follows kmeng01/rome `experiments/causal_trace.py` `plot_trace_heatmap`: tokens on the y axis (top to
bottom, subject tokens marked "*"), layers on the x axis, colour = p(answer) with the cell restored, the colour scale
starting at the corrupted p; hidden states in Purples, MLP in Greens, attention in Reds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from locate.causal_trace import TraceResult
from locate.logit_lens import LogitLensResult

CMAPS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
TITLES = {"resid": "single restored layer", "mlp": "restored MLP", "attn": "restored attention"}
SAVE_DPI = 150
"""Resolution of the saved PNGs."""


def _pyplot():
    import matplotlib

    if "inline" not in matplotlib.get_backend():  # a notebook's kernel shows its figures; elsewhere, files only
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def token_labels(result: TraceResult) -> list[str]:
    """Token strings with the subject's tokens marked "*" (ROME's convention)."""
    start, end = result.subject_range
    return [repr(tok.strip() or tok)[1:-1] + ("*" if start <= i < end else "") for i, tok in enumerate(result.tokens)]


def plot_trace(result: TraceResult, path: str | Path | None = None, *, ax=None, title: str | None = None,
               cbar_label: str = "p(answer)"):
    """One kind's heatmap; saved as PNG when `path` is given. Returns the figure."""
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(3.5, max(2.0, 0.25 * len(result.tokens) + 1.0)))
    else:
        fig = ax.figure
    scores = torch.nan_to_num(result.scores, nan=result.low).numpy()
    mesh = ax.pcolor(scores, cmap=CMAPS.get(result.kind, "Greys"), vmin=min(result.low, float(scores.min())))
    ax.invert_yaxis()
    ax.set_yticks([0.5 + i for i in range(len(result.tokens))])
    ax.set_yticklabels(token_labels(result), fontsize=7)
    step = max(1, result.n_layers // 6)
    ax.set_xticks([0.5 + i for i in range(0, result.n_layers, step)])
    ax.set_xticklabels(list(range(0, result.n_layers, step)), fontsize=7)
    window = "" if result.kind == "resid" else f" (window {result.window})"
    ax.set_title(title or f"Impact of {TITLES.get(result.kind, result.kind)}{window}", fontsize=8)
    ax.set_xlabel(f"layer within {'model' if result.kind == 'resid' else 'center of window'}", fontsize=7)
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(cbar_label, fontsize=7)
    bar.ax.set_title(f"p({result.answer.strip()})", fontsize=6, y=-0.12)
    bar.ax.tick_params(labelsize=6)
    if own:
        fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def plot_fact_traces(results: Mapping[str, TraceResult], path: str | Path | None = None, *,
                     suptitle: str | None = None):
    """The kinds of one fact side by side (ROME's figure 1 layout); saved as PNG when `path` is given."""
    plt = _pyplot()
    kinds = [k for k in ("resid", "mlp", "attn") if k in results] + \
        [k for k in results if k not in ("resid", "mlp", "attn")]
    n_tokens = len(next(iter(results.values())).tokens)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), max(2.2, 0.25 * n_tokens + 1.2)), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        plot_trace(results[kind], ax=ax)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def plot_logit_lens(results: Sequence[LogitLensResult], path: str | Path | None = None):
    """p(target) per depth at the answer position, one line per prompt; saved as PNG when `path` is given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for result in results:
        ax.plot(result.probs.numpy(), label=f"{result.target} ({result.case_id})", lw=1)
    ax.set_xlabel("depth (resid_pre of layer; last = final output)", fontsize=7)
    ax.set_ylabel("p(target) through the logit lens", fontsize=7)
    ax.set_yscale("log")
    ax.tick_params(labelsize=6)
    if len(results) <= 10:
        ax.legend(fontsize=6)
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def _save(fig, path: str | Path) -> None:
    """Write the PNG via a temp file + rename (a crash never leaves half a figure).

    The file's dpi is fixed here, not on the figure, so that a notebook's inline figure follows its rc (figure.dpi)."""
    from obliviate.results import atomic_save_figure

    atomic_save_figure(fig, Path(path), dpi=SAVE_DPI)
    _pyplot().close(fig)
