"""How the statistics sections read: one section dict per test, numbers rounded for people,
and the markdown of a section."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.formats import fmt, to_markdown

__all__ = ["p_text", "score_text", "section", "section_markdown"]


def p_text(p: float) -> str:
    """A p-value to 3 decimals ("<0.001" below), "—" when no test ran."""
    return "<0.001" if p is not None and not pd.isna(p) and p < 0.0005 else fmt(p, ".3f")


def score_text(v: float) -> str:
    """A score or a difference in percentage points, to 1 decimal."""
    return fmt(v, ".1f")


def section(
    heading: str,
    about: str,
    tables: Sequence[tuple[str, pd.DataFrame]] = (),
    figures: Sequence[Path] = (),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """A section for the HTML page: `about` (what the test is over and what a reader may
    conclude) comes first among the notes."""
    return {"heading": heading, "tables": list(tables), "figures": list(figures),
            "notes": [about, *notes]}  # fmt: skip


def section_markdown(sec: dict[str, Any], out_dir: Path) -> str:
    """`## heading`, the paragraph, each table under its caption, figures linked relative to
    `out_dir`, then the other notes as a list."""
    about, *rest = sec["notes"]
    parts = [f"## {sec['heading']}", "", about, ""]
    for caption, table in sec["tables"]:
        parts += [f"**{caption}**", "", to_markdown(table), ""]
    for fig in sec["figures"]:
        rel = Path(os.path.relpath(fig, out_dir)).as_posix()
        parts += [f"![{sec['heading']}]({rel})", ""]
    parts += [f"- {n}" for n in rest]
    return "\n".join(parts).rstrip() + "\n"
