"""Score-vs-cost figures of one block: each setting's mean score (± std over seeds) against its
trainable parameters, training compute or training memory, with the Pareto front.

Points carry no text: each method is told apart by its colour and marker (`palette`), listed in
a legend beside the axes, so no label can overlap a point or another label however closely the
methods cluster.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from bench.metric_table import LOWER_IS_BETTER
from bench.report.figure_layout import (
    FIG_WIDTH_IN,
    legend_beside,
    legend_height_in,
    method_handle,
    set_title,
    wrap,
)
from bench.report.frame import memory_words
from bench.report.palette import method_style
from bench.report.plot_data import score_label, seeds_label
from bench.report.stats import pareto_front

FRONT_LABEL = "Pareto front"
# The axes' share of the figure width (the legend takes the rest): titles wrap to it.
_AXES_SHARE = 0.7


def _log_x(ax: Any) -> None:
    """A log x axis whose ticks read 0.1, 1, 10, 1,000 rather than powers of ten."""
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.10g}")
    ax.xaxis.set_major_formatter(plain)
    # Within one decade matplotlib labels minor ticks as 3x10^0: plain numbers there too.
    ax.xaxis.set_minor_formatter(plain if _one_decade(ax) else FuncFormatter(lambda v, _: ""))


def _one_decade(ax: Any) -> bool:
    lo, hi = ax.get_xlim()
    return lo > 0 and hi / lo < 10


def _log_if_wide(ax: Any, x: np.ndarray) -> None:
    x = x[np.isfinite(x) & (x > 0)]
    if len(x) and x.max() / x.min() > 20:
        _log_x(ax)


def _front(pts: pd.DataFrame, x: str) -> pd.DataFrame:
    """The settings no other beats on both cost `x` and score, cheapest first."""
    lower = pts["metric"].iloc[0] in LOWER_IS_BETTER
    score = -pts["mean"] if lower else pts["mean"]
    return pts[pareto_front(pts[x], score)].sort_values([x, "mean"])


def score_scatter(pts: pd.DataFrame, x: str, title: str, *, front: bool = True) -> Any:
    """The figure: one marker with ±1 std bars per setting, the front as a dashed staircase
    when it joins at least two settings, and a legend of exactly what is drawn."""
    pts = pts.sort_values(["mean", "label"], ascending=[False, True])  # legend: best first
    fig, ax = plt.subplots(
        figsize=(FIG_WIDTH_IN, max(5.5, legend_height_in(len(pts) + 1))), layout="constrained"
    )
    handles = []
    for _, row in pts.iterrows():
        style = method_style(row["label"])
        yerr = None if pd.isna(row["std"]) else row["std"]
        ax.errorbar(row[x], row["mean"], yerr=yerr, fmt=style.marker, ms=8, mfc=style.facecolor,
                    mec=style.color, mew=1.4, color=style.color, elinewidth=1.2, capsize=4,
                    alpha=0.9, zorder=3)  # fmt: skip
        label = seeds_label(row["label"], int(row["n"]))
        handles.append(method_handle(label, row["label"], line=False))
    line = _front(pts, x) if front else pts.iloc[:0]
    if len(line) >= 2:  # one setting alone is no front: no line, no legend entry
        (drawn,) = ax.plot(line[x], line["mean"], drawstyle="steps-post", color="0.35", ls="--",
                           lw=1.2, zorder=2, label=FRONT_LABEL)  # fmt: skip
        handles.append(drawn)
    ax.set_ylabel(score_label(pts["metric"]))
    ax.margins(x=0.08, y=0.12)  # markers and caps at the edge stay whole
    legend_beside(ax, handles)
    set_title(ax, title, FIG_WIDTH_IN * _AXES_SHARE)
    return fig, ax


def _finite(agg: pd.DataFrame, x: str, *, positive: bool = True) -> pd.DataFrame:
    keep = np.isfinite(agg[x]) & np.isfinite(agg["mean"])
    return agg[keep & (agg[x] > 0)] if positive else agg[keep]


def fig_params(agg: pd.DataFrame, title: str) -> Any | None:
    pts = _finite(agg, "trainable_pct")
    if pts.empty:
        return None
    fig, ax = score_scatter(pts, "trainable_pct", f"{title}: score vs trainable parameters")
    _log_x(ax)
    ax.set_xlabel("trainable parameters (% of the backbone's, log scale)")
    return fig


def fig_flops(agg: pd.DataFrame, title: str) -> Any | None:
    pts = _finite(agg, "train_gflops")
    if pts.empty:  # records from before FLOPs were counted
        return None
    fig, ax = score_scatter(pts, "train_gflops", f"{title}: score vs training compute")
    # A head trained on cached features costs a millionth of full fine-tuning per step.
    _log_if_wide(ax, pts["train_gflops"].to_numpy())
    log = ", log scale" if ax.get_xscale() == "log" else ""
    ax.set_xlabel(f"training compute per image (GFLOPs of one forward and backward pass{log})")
    return fig


def fig_memory(agg: pd.DataFrame, title: str) -> Any | None:
    """Memory is measured differently on a GPU and on a CPU: no front across them, and the axis
    says in words what the number is (`frame.memory_words`)."""
    pts = _finite(agg, "mem_mb", positive=False)  # a head on cached features may add ~0 MB
    if pts.empty:
        return None
    fig, ax = score_scatter(pts, "mem_mb", f"{title}: score vs training memory", front=False)
    _log_if_wide(ax, pts["mem_mb"].to_numpy())
    log = ", log scale" if ax.get_xscale() == "log" else ""
    words = f"memory used while training (MB{log}): {memory_words(pts)}"
    ax.set_xlabel(wrap(words, 95))
    return fig
