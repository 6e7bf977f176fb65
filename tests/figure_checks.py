"""What a drawn report figure must not do: text over text, text over a data point, text cut off
at the figure's edge (`layout_problems`), and a spy on a figure writer's save_figure that
records what each figure shows (`draw_spied`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.transforms import Bbox

from bench.report.figure_io import stamp_demo

# Boxes are compared shrunk by this many pixels: touching is not overlapping.
_SLACK = 1.0


def _ticklabels(ax: Any) -> list[Any]:
    """The tick labels drawn: those of ticks inside the view (the others are not drawn)."""
    out = []
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        lo, hi = min(lo, hi), max(lo, hi)
        for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
            if lo <= tick.get_loc() <= hi and tick.label1.get_visible():
                out.append(tick.label1)
    return out


def labels(fig: Any) -> list[tuple[str, Bbox]]:
    """(text, window box) of every text drawn: titles, axis and tick labels, annotations,
    figure texts; a legend is one box."""
    renderer = fig.canvas.get_renderer()
    texts = [*fig.texts]  # the suptitle among them
    boxes = [("legend", lg.get_window_extent(renderer)) for lg in fig.legends]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.axison:
            texts += _ticklabels(ax)
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            boxes.append(("legend", legend.get_window_extent(renderer)))
    for t in dict.fromkeys(texts):  # each once, in order
        if t.get_visible() and t.get_text().strip():
            boxes.append((t.get_text(), t.get_window_extent(renderer)))
    return boxes


def data_points(fig: Any) -> list[tuple[float, float]]:
    """Display position of every vertex of every line drawn inside its axes (markers, error
    bars and caps, fronts), where a label must not sit."""
    points = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        inside = ax.bbox
        for line in ax.get_lines():
            if not line.get_visible() or len(line.get_xydata()) == 0:
                continue
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
            points += [
                (x, y) for x, y in xy if np.isfinite(x) and np.isfinite(y) and inside.contains(x, y)
            ]
    return points


def layout_problems(fig: Any) -> list[str]:
    """Every overlap of two texts (or legends), every text over a data point and every text
    reaching past the figure's edge, in words; [] for a clean figure."""
    if not hasattr(fig.canvas, "get_renderer"):  # closed by save_figure: draw it again
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    boxes = [(name, box.expanded(1, 1).padded(-_SLACK)) for name, box in labels(fig)]
    problems = []
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        if box_a.overlaps(box_b):
            problems.append(f"{a!r} overlaps {b!r}")
    points = data_points(fig)
    for name, box in boxes:
        hits = [p for p in points if box.contains(*p)]
        if hits:
            problems.append(f"{name!r} covers data point(s) {hits[:2]}")
        if box.x0 < 0 or box.y0 < 0 or box.x1 > fig.bbox.x1 or box.y1 > fig.bbox.y1:
            problems.append(f"{name!r} is cut off by the figure's edge ({box.bounds})")
    return problems


def seen_figure(fig: Any) -> dict[str, Any]:
    """What a figure shows, read before it is closed."""

    def legend(ax: Any) -> dict[str, Any]:
        lg = ax.get_legend()
        if lg is None:
            return {}
        return {
            t.get_text(): (h.get_color(), h.get_marker(), h.get_markerfacecolor())
            for t, h in zip(lg.get_texts(), lg.legend_handles, strict=True)
            if hasattr(h, "get_marker")
        }

    return {
        "axes": [
            {
                "xscale": ax.get_xscale(),
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "texts": sorted(t.get_text() for t in ax.texts),
                "lines": {
                    ln.get_label(): ln.get_xydata().ravel().tolist() for ln in ax.get_lines()
                },
                # errorbar() labels its container, not the line inside
                "series": {
                    c.get_label(): c.lines[0].get_xydata().ravel().tolist()
                    for c in ax.containers
                    if isinstance(c, ErrorbarContainer)
                },
                "legend": legend(ax),
                "bars": [
                    (mcolors.to_hex(p.get_edgecolor()), mcolors.to_hex(p.get_facecolor()))
                    for p in ax.patches
                ],
                "yticks": [t.get_text() for t in ax.get_yticklabels()],
                "xticks": [t.get_text() for t in ax.get_xticklabels()],
            }
            for ax in fig.axes
            if ax.get_visible()
        ]
    }


def draw_spied(
    module: Any, write: Any, *args: Any, save: bool = True, check: bool = True, **kw: Any
) -> dict[str, Any]:
    """Run `write` with `module.save_figure` spied on: per stem, what the figure shows
    (`seen_figure`), whether it was stamped DEMO, and (`check`) its `layout_problems` as saved.
    `save=False` skips the PNG and PDF (but still stamps the notice), for speed."""
    seen: dict[str, dict[str, Any]] = {}
    original = module.save_figure

    def spy(fig: Any, out_dir: Path, stem: str, *, demo: bool = False) -> list[Path]:
        seen[stem] = {**seen_figure(fig), "demo": demo}
        if save:
            paths = original(fig, out_dir, stem, demo=demo)
        else:
            if demo:
                stamp_demo(fig)
            paths = []
        seen[stem]["problems"] = layout_problems(fig) if check else None
        plt.close(fig)
        return paths

    mp = pytest.MonkeyPatch()
    mp.setattr(module, "save_figure", spy)
    try:
        paths = write(*args, **kw)
    finally:
        mp.undo()
    return {"paths": paths, "seen": seen}
