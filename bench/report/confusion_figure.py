"""Confusion-matrix figure of one block: a small panel per method, rows = true class, columns =
predicted, cells coloured by the row-normalised share and annotated with summed counts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report.figure_io import save_figure

__all__ = ["draw_confusion", "row_normalised", "write_confusion"]


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row with no images stays 0)."""
    c = np.asarray(counts, dtype=float)
    sums = c.sum(axis=1, keepdims=True)
    return np.divide(c, sums, out=np.zeros_like(c), where=sums > 0)


def draw_confusion(
    matrices: Mapping[str, np.ndarray], classes: Sequence[str], *, title: str = ""
) -> Any:
    """The figure (not saved): one panel per method of `matrices` (counts [C, C])."""
    import matplotlib.pyplot as plt

    k, c = len(matrices), len(classes)
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    side = max(2.6, 0.42 * c + 1.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 0.4, side * nrows + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    size = 8 if c <= 6 else 6.5
    for ax, (method, counts) in zip(axes.flat, matrices.items(), strict=False):
        shares = row_normalised(counts)
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(c):
            for j in range(c):
                dark = shares[i, j] > 0.6
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=size,
                        color="white" if dark else "black")  # fmt: skip
        ax.set_xticks(range(c), classes, rotation=90, fontsize=size)  # upright boxes never overlap
        ax.set_yticks(range(c), classes, fontsize=size)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def write_confusion(
    matrices: Mapping[str, np.ndarray],
    classes: Sequence[str],
    out_dir: Path,
    stem: str,
    *,
    title: str = "",
    demo: bool = False,
) -> list[Path]:
    """`draw_confusion` saved as `stem`.png and .pdf under `out_dir`."""
    return save_figure(draw_confusion(matrices, classes, title=title), out_dir, stem, demo=demo)
