"""Tables as text: marked markdown pipe tables, booktabs LaTeX and CSV, and the cell format."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

# Columns set flush left in LaTeX; everything else is a number, set flush right.
LABEL_COLUMNS = frozenset(
    {"block", "dataset", "backbone", "method", "setting", "metric", "status", "note"}
)


def fmt(v: Any, spec: str) -> str:
    """A number formatted with `spec` for people, "—" when missing."""
    return "—" if v is None or pd.isna(v) else format(v, spec)


# Costs older records lack, as (frame column, header, format): a table shows only those some
# row has (energy only where a GPU measured it).
OPTIONAL_COSTS = (
    ("train_gflops", "train GFLOPs", ".3g"),
    ("infer_gflops", "infer GFLOPs", ".3g"),
    ("overhead_gflops", "overhead GFLOPs", ".3g"),
    ("latency_b1_ms", "batch-1 ms", ".1f"),
    ("train_j_img", "train J/img", ".3g"),
    ("eval_j_img", "eval J/img", ".3g"),
)
OPTIONAL_COSTS_NOTE = (
    "GFLOPs per image, counted (matrix products, convolutions and attention; the same on every "
    "machine): train = one training step's forward and backward (from cached features where the "
    "run trained from them), infer = the whole model's forward, overhead = the forward after "
    "merging (methods that merge) or as trained, minus the backbone's. batch-1 ms: median time "
    "of one image through the whole model. J/img: GPU energy per image."
)


def add_optional_costs(table: pd.DataFrame, source: pd.DataFrame) -> bool:
    """Add to the display `table` the OPTIONAL_COSTS columns some row of `source` (the raw rows,
    in the table's order) has, formatted; whether any was added."""
    added = False
    for col, header, spec in OPTIONAL_COSTS:
        if col not in source:
            continue
        values = pd.to_numeric(source[col], errors="coerce")
        if values.notna().any():
            table[header] = [fmt(v, spec) for v in values]
            added = True
    return added


def _text(v: Any) -> str:
    """A raw value as text: missing as "—", floats with two decimals (three significant digits
    below 0.01)."""
    if v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.2f}" if v == 0 or abs(v) >= 0.01 else f"{v:.3g}"
    return str(v)


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    return [[_text(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def _mark_of(ranks: pd.DataFrame | None, i: int, j: int) -> int:
    if ranks is None:
        return 0
    v = ranks.iat[i, j]
    return int(v) if pd.notna(v) else 0


def to_markdown(frame: pd.DataFrame, ranks: pd.DataFrame | None = None) -> str:
    """A pipe table: best **bold**, second best _italic_."""
    rows = _cells(frame)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            mark = _mark_of(ranks, i, j)
            t = t.replace("|", r"\|").replace("\n", " ")
            row[j] = f"**{t}**" if mark == 1 else f"_{t}_" if mark == 2 else t
    header = [str(c).replace("|", r"\|") for c in frame.columns]
    return pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True)


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "−": "-",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "†": r"\textdagger{}",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "\n": " ",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX))


def latex_escape(text: Any) -> str:
    """Text safe in a LaTeX table cell: specials escaped in one pass, ± as $\\pm$."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group()], str(text))


def to_latex(
    frame: pd.DataFrame,
    *,
    caption: str,
    label: str,
    ranks: pd.DataFrame | None = None,
    footnotes: tuple[str, ...] | list[str] = (),
    groups: list[tuple[str, int]] | None = None,
) -> str:
    """A booktabs table (needs \\usepackage{booktabs}): caption on top, best \\textbf, second best
    \\underline, footnotes in \\footnotesize after the tabular. All text is escaped; `label` is
    used as given. `groups` [(title, span), ...] adds a header row above the column names, each
    titled group centred over its columns and underlined with \\cmidrule; the spans must add up to
    the number of columns."""
    spec = "".join(
        "l" if j == 0 or str(c) in LABEL_COLUMNS else "r" for j, c in enumerate(frame.columns)
    )
    body = []
    for i, row in enumerate(_cells(frame)):
        out = []
        for j, t in enumerate(row):
            t = latex_escape(t)
            mark = _mark_of(ranks, i, j)
            out.append(
                rf"\textbf{{{t}}}" if mark == 1 else rf"\underline{{{t}}}" if mark == 2 else t
            )
        body.append(" & ".join(out) + r" \\")
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *_group_header(groups, len(frame.columns)),
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if footnotes:
        lines += [r"\par\smallskip\footnotesize", *(latex_escape(f) + r"\par" for f in footnotes)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _group_header(groups: list[tuple[str, int]] | None, n_columns: int) -> list[str]:
    if not groups:
        return []
    if sum(span for _, span in groups) != n_columns or any(span < 1 for _, span in groups):
        raise ValueError(f"column groups {groups} do not span the table's {n_columns} columns")
    cells, rules, first = [], [], 1
    for title, span in groups:
        text = latex_escape(title)
        cells.append(rf"\multicolumn{{{span}}}{{c}}{{{text}}}" if span > 1 else text)
        if title:
            rules.append(rf"\cmidrule(lr){{{first}-{first + span - 1}}}")
        first += span
    return [" & ".join(cells) + r" \\" + (" " + " ".join(rules) if rules else "")]


def to_csv(frame: pd.DataFrame) -> str:
    """CSV of a numbers frame (`score_table`, `efficiency_table`): full precision, no marks."""
    return frame.to_csv(index=False, lineterminator="\n")
