"""The report's figures from the long records frame (`bench.report.frame`): PNG and PDF each.

Per block (dataset, shots, backbone): score vs trainable parameters, vs training compute and vs
training memory (`scatter`), training time, and reliability diagrams (`reliability`); per
(dataset, backbone) run at more than one shot count, score vs shots; per search block, the
best-of-k search curves. Only `ok` runs are drawn (the tables list the others), averaged only
within one (method, setting) as the summary tables do (`plot_data`). Every method has one
colour and marker in all of them (`palette`); `captions` says how to read each kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

# A report is written on servers and in CI: never ask for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bench.report.figure_io import save_figure
from bench.report.figure_layout import (
    FIG_WIDTH_IN,
    NAME_CHARS,
    legend_beside,
    legend_height_in,
    method_handle,
    set_title,
    wrap,
)
from bench.report.names import slug, unique
from bench.report.palette import method_style
from bench.report.plot_data import aggregate, block_title, prepare, score_label, seeds_label
from bench.report.reliability import fig_reliability
from bench.report.scatter import fig_flops, fig_memory, fig_params

__all__ = ["block_title", "write_budget_plots", "write_plots"]

# Total sideways spread of the methods' markers at one shot count (the slots are 1 apart).
_DODGE = 0.3
_BUDGET_DASHES = ("-", "--", ":", "-.")


def _fig_time(agg: pd.DataFrame, title: str) -> Any | None:
    pts = agg[np.isfinite(agg["train_s"])].sort_values("train_s")
    if pts.empty:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH_IN, 1.6 + 0.45 * len(pts)), layout="constrained")
    y = np.arange(len(pts))
    styles = [method_style(label) for label in pts["label"]]
    ax.barh(y, pts["train_s"], color=[s.facecolor for s in styles],
            edgecolor=[s.color for s in styles], lw=1.5)  # fmt: skip
    ax.set_yticks(y, [wrap(label, NAME_CHARS) for label in pts["label"]])
    ax.invert_yaxis()  # fastest on top
    for yi, (t, ips) in enumerate(zip(pts["train_s"], pts["img_s"], strict=True)):
        text = "— img/s" if pd.isna(ips) else f"{ips:.0f} img/s"
        ax.annotate(f" {text}", (t, yi), va="center", fontsize=9)
    ax.set_xlim(0, pts["train_s"].max() * 1.3)  # room for the throughput beside the longest bar
    ax.set_xlabel("training time (s, mean over seeds)")
    set_title(ax, f"{title}: training time", FIG_WIDTH_IN * 0.75)
    return fig


def _fig_shots(agg: pd.DataFrame, title: str) -> Any | None:
    pts = agg[np.isfinite(agg["mean"])]
    shots = sorted(set(pts["_shots"]), key=lambda k: (k == 0, k))  # full data last
    if len(shots) < 2:
        return None
    pos = {k: i for i, k in enumerate(shots)}
    labels = sorted(set(pts["label"]))
    fig, ax = plt.subplots(
        figsize=(FIG_WIDTH_IN, max(5.5, legend_height_in(len(labels)))), layout="constrained"
    )
    handles = []
    for i, label in enumerate(labels):
        line = pts[pts["label"] == label].sort_values("_shots", key=lambda s: s.map(pos))
        # Nudged apart sideways so that methods of close scores keep their bars visible.
        shift = (i / (len(labels) - 1) - 0.5) * _DODGE if len(labels) > 1 else 0.0
        style = method_style(label)
        ax.errorbar(line["_shots"].map(pos) + shift, line["mean"],
                    yerr=line["std"].fillna(0).to_numpy(), marker=style.marker, ms=7,
                    mfc=style.facecolor, mec=style.color, color=style.color, ls=style.linestyle,
                    capsize=3, label=label)  # fmt: skip
        handles.append(method_handle(seeds_label(label, int(line["n"].min())), label))
    ax.set_xticks(range(len(shots)), ["full" if k == 0 else str(k) for k in shots])
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel(score_label(pts["metric"]))
    legend_beside(ax, handles)
    set_title(ax, f"{title}: score vs shots", FIG_WIDTH_IN * 0.7)
    return fig


def write_plots(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write every figure as PNG and PDF under `out_dir`; return the paths (PNG, then PDF, per
    figure). Nothing to draw (no records, no ok run) writes nothing and returns []. A figure
    drawn from any demo run carries the DEMO notice."""
    ok = prepare(df)
    if ok.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()

    def emit(kind: str, name: str, make: Any, rows: pd.DataFrame) -> None:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            fig = make(rows, name)
        if fig is not None:
            stem = unique(f"{kind}-{slug(name)}", taken)
            written.extend(save_figure(fig, out_dir, stem, demo=bool(rows["demo"].any())))

    keys = ["dataset", "_shots", "_backbone"]
    agg = aggregate(ok, keys)
    for (dataset, shots, backbone), block in agg.groupby(keys, sort=True):
        title = block_title(dataset, shots, backbone)
        emit("score_vs_params", title, fig_params, block)
        emit("score_vs_memory", title, fig_memory, block)
        emit("score_vs_train_flops", title, fig_flops, block)
        emit("train_time", title, _fig_time, block)
        emit("reliability", title, fig_reliability, block)
    for (dataset, backbone), grid in agg.groupby(["dataset", "_backbone"], sort=True):
        if grid["_shots"].nunique() > 1:
            emit("score_vs_shots", f"{dataset} · {backbone}", _fig_shots, grid)
    return written


def _fig_budget(part: pd.DataFrame, block: str) -> Any:
    mean = part.groupby(["method", "budget", "k"], sort=True)["best_val"].mean().reset_index()
    lines = list(mean.groupby(["method", "budget"], sort=True))
    fig, ax = plt.subplots(
        figsize=(FIG_WIDTH_IN, max(5.0, legend_height_in(len(lines)))), layout="constrained"
    )
    handles = []
    for (method, budget), line in lines:
        style = method_style(str(method))
        # A method searched at several budgets: one colour, one dash pattern per budget.
        rank = sorted(set(mean.loc[mean["method"] == method, "budget"])).index(budget)
        (drawn,) = ax.plot(line["k"], line["best_val"], marker=style.marker, ms=6,
                           mfc=style.facecolor, mec=style.color, color=style.color,
                           ls=_BUDGET_DASHES[rank % len(_BUDGET_DASHES)],
                           label=wrap(f"{method} (budget {budget})", NAME_CHARS))  # fmt: skip
        handles.append(drawn)
    ax.set_xlabel("trials so far (k)")
    ax.set_ylabel(f"best validation {part['metric'].iloc[0]} so far")
    ax.xaxis.get_major_locator().set_params(integer=True)
    legend_beside(ax, handles)
    set_title(ax, f"{block}: search budget", FIG_WIDTH_IN * 0.7)
    return fig


def write_budget_plots(curves: pd.DataFrame, out_dir: Path, *, demo: bool = False) -> list[Path]:
    """Per block, the best validation score among the first k trials against k, one line per
    method and budget (split seeds averaged): how much each method gains from its budget.
    `demo` (or a true `demo` column of the block's rows) stamps the DEMO notice."""
    if curves.empty or curves["best_val"].isna().all():
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for block, part in curves.groupby("block", sort=True):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            fig = _fig_budget(part, str(block))
        stamped = demo or ("demo" in part.columns and bool(part["demo"].fillna(False).any()))
        written += save_figure(fig, out_dir, unique(f"budget-{slug(block)}", taken), demo=stamped)
    return written
