"""Splitting a table too wide for the report page into parts that each fit, every part
repeating the table's leading label columns, so no column is lost off the right of the page."""

from __future__ import annotations

import pandas as pd

from bench.report.formats import cell_text, is_label

# The page's content width at a 1400 px window (body max-width 1360 px less its padding), with a
# margin for estimation error; the page's table font is about 13 px.
PAGE_PX = 1240
_CHAR_PX = 8.0  # a generous average glyph width at 13 px (DejaVu Sans digits are ~8.3 px)
_CELL_PX = 18  # padding and borders of one cell
_LABEL_CHARS = 24  # label cells wrap (anywhere, past this), so a long name sets no wider column


def column_px(frame: pd.DataFrame, j: int) -> float:
    """An estimate of column `j`'s rendered width: headers wrap between words, label cells wrap,
    number cells stay on one line."""
    header = max((len(w) for w in str(frame.columns[j]).split()), default=1)
    texts = [cell_text(v) for v in frame.iloc[:, j]]
    if is_label(frame, j):
        cell = min(max((len(w) for t in texts for w in t.split()), default=1), _LABEL_CHARS)
    else:
        cell = max((len(t) for t in texts), default=1)
    return max(header, cell) * _CHAR_PX + _CELL_PX


def fit_columns(
    frame: pd.DataFrame,
    ranks: pd.DataFrame | None = None,
    *,
    width_px: float = PAGE_PX,
    group: str | None = "block",
) -> list[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """`frame` (and its `ranks`, same shape) as one or more parts no wider than `width_px` by
    estimate (`column_px`); each part repeats the leading label columns. The `group` column
    costs no width: `formats.to_html` draws it as heading rows. A single column too wide on
    its own still gets a part of its own (the page scrolls that table sideways)."""
    n = frame.shape[1]
    lead = 0
    while lead < n - 1 and is_label(frame, lead):
        lead += 1
    lead = max(lead, 1)
    width = [0.0 if str(c) == group else column_px(frame, j) for j, c in enumerate(frame.columns)]
    if sum(width) <= width_px:
        return [(frame, ranks)]
    parts: list[list[int]] = [[]]
    room = width_px - sum(width[:lead])
    used = 0.0
    for j in range(lead, n):
        if parts[-1] and used + width[j] > room:
            parts.append([])
            used = 0.0
        parts[-1].append(j)
        used += width[j]
    out = []
    for part in parts:
        columns = [*range(lead), *part]
        out.append((frame.iloc[:, columns], None if ranks is None else ranks.iloc[:, columns]))
    return out
