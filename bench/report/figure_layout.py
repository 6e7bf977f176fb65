"""Layout shared by the report's figures: their width, wrapped text, a legend beside the axes.

The HTML report shows a PNG at its own size (1300 px at `figure_io.PNG_DPI`), so figures are
sized for that width and any text that could run past an edge is wrapped instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from matplotlib.lines import Line2D

from bench.report.figure_io import PNG_DPI
from bench.report.palette import method_style

FIG_WIDTH_IN = 1300 / PNG_DPI
# Legend rows per column before another column starts (the figure grows to hold them).
LEGEND_ROWS = 18
# A method name longer than this wraps onto further lines in legends and panel titles.
NAME_CHARS = 28


def wrap(text: str, chars: int) -> str:
    """`text` on lines of at most `chars` characters, broken after spaces, "_", "-" or "."
    where it can be (method and backbone names), cut where it cannot; never at a no-break
    space."""
    lines: list[str] = []
    line = ""
    for piece in re.findall(r"[^ \n_.-]*[_.-]*[ \n]*", str(text)):
        if line and len((line + piece).rstrip()) > chars:
            lines.append(line.rstrip())
            line = ""
        line += piece
    lines.append(line.rstrip())
    cut = [part[i : i + chars] for part in lines for i in range(0, max(len(part), 1), chars)]
    return "\n".join(part for part in cut if part) or str(text)


def chars_for(width_in: float, fontsize: float) -> int:
    """How many characters of a `fontsize` pt sans-serif fit on `width_in` inches (an average
    character is about 0.6 em wide; 0.95 for slack)."""
    return max(12, int(width_in * 72 * 0.95 / (0.6 * fontsize)))


def set_title(ax: Any, text: str, width_in: float, fontsize: float = 12) -> None:
    """An axes title wrapped to `width_in`, so a long block title is never cut off."""
    ax.set_title(wrap(text, chars_for(width_in, fontsize)), fontsize=fontsize)


def method_handle(label: str, name: str, *, line: bool = True) -> Line2D:
    """A legend entry showing method `name`'s colour and marker (`palette.method_style`), and
    its line style when the figure joins its points (`line`)."""
    style = method_style(name)
    return Line2D([], [], color=style.color, marker=style.marker, mfc=style.facecolor,
                  mec=style.color, ls=style.linestyle if line else "none", ms=8, lw=1.2,
                  label=wrap(label, NAME_CHARS))  # fmt: skip


def legend_beside(ax: Any, handles: list[Any]) -> Any | None:
    """The legend to the right of the axes, outside them: it can cover neither a point nor a
    label. None (no legend box at all) when there is nothing to list."""
    if not handles:
        return None
    ncol = math.ceil(len(handles) / LEGEND_ROWS)
    return ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0, ncol=ncol, fontsize=9, frameon=False)  # fmt: skip


def legend_height_in(n_entries: int) -> float:
    """The figure height a `legend_beside` of `n_entries` needs (about 0.24 in per row)."""
    return 0.24 * min(n_entries, LEGEND_ROWS) + 1.0
