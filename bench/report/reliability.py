"""Reliability diagrams of one block: per method, test accuracy against confidence in each bin,
pooled over seeds, with how many predictions each bin holds in a strip below it.

A bin of a handful of predictions says little about calibration: the strip gives every bin's
count, and such bins are drawn pale.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.report.figure_layout import FIG_WIDTH_IN, NAME_CHARS, chars_for, wrap

# Bins holding fewer predictions than this are drawn pale: their accuracy is mostly noise.
FEW_PREDICTIONS = 10
_COLS = 4
_ACC = "0.55"
_GAP = "#D55E00"


def _panel(ax: Any, strip: Any, cal: dict[str, np.ndarray], first: bool) -> None:
    n = len(cal["count"])
    centers = (np.arange(n) + 0.5) / n
    count = cal["count"]
    has = count > 0
    acc, conf = cal["accuracy"][has], cal["confidence"][has]
    alpha = np.where(count[has] < FEW_PREDICTIONS, 0.3, 1.0)
    for c, a, al in zip(centers[has], acc, alpha, strict=True):
        ax.bar(c, a, width=1 / n, color=_ACC, edgecolor="0.2", lw=0.6, alpha=al)
    # The gap between mean confidence and accuracy per bin: what ECE sums up.
    ax.bar(centers[has], np.abs(conf - acc), bottom=np.minimum(conf, acc), width=1 / n,
           color=_GAP, alpha=0.25, hatch="//", edgecolor=_GAP, lw=0.4)  # fmt: skip
    ax.plot([0, 1], [0, 1], ls="--", color="0.3", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.tick_params(labelbottom=False)
    strip.bar(centers[has], count[has], width=1 / n, color="0.85", edgecolor="0.5", lw=0.4)
    for c, k in zip(centers[has], count[has], strict=True):
        strip.text(c, 0.06, f"{k:.0f}", rotation=90, ha="center", va="bottom", fontsize=6.5,
                   transform=strip.get_xaxis_transform())  # fmt: skip
    strip.set(xlim=(0, 1), ylim=(0, count.max() * 1.05), yticks=[], xlabel="confidence")
    if first:
        ax.set_ylabel("accuracy")
        strip.set_ylabel("count", fontsize=8)


def _legend(ax: Any) -> None:
    """The key, in a row of its own under the panels: it covers none of them, and the layout
    keeps it clear of the DEMO notice."""
    handles = [
        Patch(facecolor=_ACC, edgecolor="0.2", label="accuracy of the bin's predictions"),
        Patch(facecolor=_ACC, edgecolor="0.2", alpha=0.3,
              label=f"same, bin of < {FEW_PREDICTIONS} predictions"),
        Patch(facecolor=_GAP, edgecolor=_GAP, alpha=0.25, hatch="//",
              label="gap to mean confidence"),
        Line2D([], [], ls="--", color="0.3", label="perfect calibration"),
    ]  # fmt: skip
    ax.axis("off")
    ax.legend(handles=handles, loc="center", ncol=2, fontsize=9, frameon=False)


def fig_reliability(agg: pd.DataFrame, title: str) -> Any | None:
    """One panel per setting with calibration bins; None when no setting has any."""
    pts = agg[[c is not None for c in agg["calibration"]]]
    if pts.empty:
        return None
    ncol = min(_COLS, len(pts))
    nrow = math.ceil(len(pts) / ncol)
    width = min(FIG_WIDTH_IN, 2.6 * ncol + 1.0)
    fig = plt.figure(figsize=(width, 3.6 * nrow + 1.4), layout="constrained")
    grid = fig.add_gridspec(2 * nrow + 1, ncol, height_ratios=[3.0, 0.8] * nrow + [0.5])
    for i, (_, row) in enumerate(pts.iterrows()):
        r, c = divmod(i, ncol)
        ax = fig.add_subplot(grid[2 * r, c])
        strip = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        cal = row["calibration"]
        _panel(ax, strip, cal, first=c == 0)
        ece = "—" if pd.isna(row["ece_pct"]) else f"{row['ece_pct']:.2f}%"
        total = f"{cal['count'].sum():.0f}"
        ax.set_title(f"{wrap(row['label'], NAME_CHARS)}\nECE {ece} · n = {total}", fontsize=10)
    _legend(fig.add_subplot(grid[-1, :]))
    head = f"{title}: reliability (test split, bins pooled over seeds)"
    fig.suptitle(wrap(head, chars_for(width, 12)), fontsize=12)
    return fig
