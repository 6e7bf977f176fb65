"""How the statistics sections read: one section dict per test, numbers rounded for people,
and the markdown of a section."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.formats import fmt, shown_number, to_markdown
from bench.report.tables import best_marks

__all__ = ["marked", "p_text", "score_text", "section", "section_markdown"]


def p_text(p: float) -> str:
    """A p-value to 3 decimals ("<0.001" below), "—" when no test ran."""
    return "<0.001" if p is not None and not pd.isna(p) and p < 0.0005 else fmt(p, ".3f")


def score_text(v: float) -> str:
    """A score or a difference in percentage points, to 1 decimal."""
    return fmt(v, ".1f")


def marked(
    caption: str, frame: pd.DataFrame, column: str, *, lower_better: bool = False
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """A table with its best and second best `column` value marked, per block when it has a
    `block` column, on the numbers as shown (`(caption, frame, ranks)`, as the page takes it)."""
    ranks = pd.DataFrame(0, index=frame.index, columns=frame.columns)
    groups = frame.groupby("block", sort=False) if "block" in frame else [(None, frame)]
    for _, part in groups:
        values = {i: shown_number(v) for i, v in part[column].items()}
        for i, mark in best_marks(values, lower_better=lower_better, decimals=12).items():
            ranks.at[i, column] = mark
    return caption, frame, ranks


def section(
    heading: str,
    about: str,
    tables: Sequence[tuple[Any, ...]] = (),
    figures: Sequence[Path] = (),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """A section for the HTML page: `about` (what the test is over and what a reader may
    conclude) is its introduction, read before the tables; a column of reasons with nothing in
    it is left out."""
    return {"heading": heading, "intro": about,
            "tables": [_without_empty_note(t) for t in tables], "figures": list(figures),
            "notes": list(notes)}  # fmt: skip


# Columns of words that say why (no test, not ranked): left out of a table where all are empty.
_WHY_COLUMNS = ("note", "not ranked in")


def _without_empty_note(table: tuple[Any, ...]) -> tuple[Any, ...]:
    caption, frame, *ranks = table
    empty = [c for c in _WHY_COLUMNS
             if c in frame and not frame[c].fillna("").astype(str).str.strip().any()]  # fmt: skip
    if not empty:
        return table
    return (caption, frame.drop(columns=empty), *(r.drop(columns=empty) for r in ranks))


def section_markdown(sec: dict[str, Any], out_dir: Path) -> str:
    """`## heading`, the paragraph, each table under its caption, figures linked relative to
    `out_dir`, then the other notes as a list."""
    parts = [f"## {sec['heading']}", "", sec["intro"], ""]
    for caption, table, *ranks in sec["tables"]:
        parts += [f"**{caption}**", "", to_markdown(table, *ranks), ""]
    for fig in sec["figures"]:
        rel = Path(os.path.relpath(fig, out_dir)).as_posix()
        parts += [f"![{sec['heading']}]({rel})", ""]
    parts += [f"- {n}" for n in sec["notes"]]
    return "\n".join(parts).rstrip() + "\n"
