"""The critical-difference diagram (Demšar 2006, fig. 1): methods on a mean-rank axis, the
better half labelled on the left and the rest on the right, each label on its own row (so none
overlap), bars joining methods that do not differ significantly, the CD bar on top."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.figure_io import save_figure
from bench.report.tests_across import Across, cliques

__all__ = ["CD_STEM", "cd_caption", "draw_cd_diagram", "write_cd_diagram"]

CD_STEM = "cd-diagram"
_FONT = 9  # points
_ROW = 0.3  # inches between label rows


def cd_caption(result: Across) -> str:
    """How to read the diagram, in words."""
    return (
        f"Mean rank over {len(result.blocks)} complete blocks (1 = best). Methods joined by a "
        f"bar do not differ significantly (Nemenyi, α = {result.alpha:g}): their mean ranks "
        f"differ by less than the critical difference CD = {result.cd:.2f}."
    )


def _label_width(labels: list[str]) -> float:
    """Inches a label of this font needs, generously (about 0.6 em per character)."""
    return max(len(s) for s in labels) * _FONT * 0.6 / 72.0


def draw_cd_diagram(ranks: pd.Series, cd: float, *, title: str = "") -> Any:
    """The figure (not saved): `ranks` is the mean rank per method, `cd` the critical
    difference in rank units."""
    import matplotlib.pyplot as plt

    r = ranks.sort_values(kind="stable")
    k = len(r)
    labels = [f"{m} ({v:.2f})" for m, v in r.items()]
    groups = cliques(r, cd)
    margin = _label_width(labels) + 0.35
    width = max(6.0, 2 * margin + 3.0)
    wrapped = textwrap.wrap(title, width=int(width * 72 / (_FONT * 0.55))) if title else []
    y_axis = 0.35 + 0.2 * len(wrapped) + 0.55
    n_rows = math.ceil(k / 2)
    y_first = y_axis + 0.3 + 0.1 * len(groups)
    height = y_first + _ROW * n_rows + 0.15
    x0, x1 = margin, width - margin
    step = (x1 - x0) / max(k - 1, 1)

    def x(rank: float) -> float:
        return x0 + (rank - 1.0) * step

    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # inches from the top
    ax.axis("off")
    for i, line in enumerate(wrapped):
        ax.text(width / 2, 0.1 + 0.2 * i, line, ha="center", va="top", fontsize=_FONT)
    ax.plot([x0, x1], [y_axis, y_axis], color="black", lw=1)
    for t in range(1, k + 1):
        ax.plot([x(t), x(t)], [y_axis, y_axis - 0.06], color="black", lw=1)
        ax.text(x(t), y_axis - 0.09, str(t), ha="center", va="bottom", fontsize=_FONT - 1)
    # The CD bar above the axis, from rank 1; capped at the axis when wider than all ranks.
    y_cd = y_axis - 0.42
    end = min(x(1.0 + cd), x1) if math.isfinite(cd) else x1
    ax.plot([x0, end], [y_cd, y_cd], color="black", lw=1.5)
    for xe in (x0, end):
        ax.plot([xe, xe], [y_cd - 0.04, y_cd + 0.04], color="black", lw=1)
    wider = " (wider than the ranks' range)" if x(1.0 + cd) > x1 else ""
    ax.text(x0 - 0.08, y_cd, f"CD = {cd:.2f}{wider}", ha="right", va="center", fontsize=_FONT - 1)
    for i, group in enumerate(groups):
        y = y_axis + 0.15 + 0.1 * i
        ax.plot([x(r[group[0]]) - 0.03, x(r[group[-1]]) + 0.03], [y, y], color="black", lw=3,
                solid_capstyle="butt")  # fmt: skip
    left = list(r.index[:n_rows])
    right = list(r.index[n_rows:])[::-1]  # the worst on the top row: no lines cross
    for side, names in (("left", left), ("right", right)):
        for row, m in enumerate(names):
            y = y_first + _ROW * row
            xm, xe = x(r[m]), (x0 - 0.15 if side == "left" else x1 + 0.15)
            ax.plot([xm, xm, xe], [y_axis, y, y], color="#333333", lw=0.9)
            ha = "right" if side == "left" else "left"
            xt = xe - 0.05 if side == "left" else xe + 0.05
            ax.text(xt, y, f"{m} ({r[m]:.2f})", ha=ha, va="center", fontsize=_FONT)
    return fig


def write_cd_diagram(result: Across, out_dir: Path, *, demo: bool = False) -> list[Path]:
    """The diagram of `result` as `cd-diagram`.png and .pdf under `out_dir`; nothing (an empty
    list) when no test ran."""
    if result.reason:
        return []
    fig = draw_cd_diagram(result.ranks, result.cd, title=cd_caption(result))
    return save_figure(fig, out_dir, CD_STEM, demo=demo)
