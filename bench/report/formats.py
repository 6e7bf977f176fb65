"""Tables as text: marked markdown pipe tables, booktabs LaTeX, HTML and CSV, and the cell
format."""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np
import pandas as pd

# Columns always set flush left; others are flush right when they hold numbers (`is_label`).
LABEL_COLUMNS = frozenset(
    {"block", "dataset", "backbone", "method", "setting", "metric", "status", "note"}
)
# A cell that starts like a number: "82.00 ± 2.00", "-0.3", "10,000,000", ".5", "3 ok".
_NUMBER = re.compile(r"^[-+−]?\.?\d")
# What a number cell holds when it has no number ("failed/oom": `tables.status_words`).
_NO_NUMBER = frozenset({"", "—", "not run", "no score", "failed", "oom", "diverged"})


def fmt(v: Any, spec: str) -> str:
    """A number formatted with `spec` for people, "—" when missing."""
    return "—" if v is None or pd.isna(v) else format(v, spec)


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*)?\.?\d+(?:[eE][-+]?\d+)?")


def shown_number(text: str) -> float:
    """The first number a formatted cell shows ("22,000,000", "40.0†", "80.00 ± 1.00 [...]"),
    NaN for "—" or words, so that marks follow what a reader sees: values shown equal tie."""
    found = _NUMBER.search(str(text))
    return float(found.group().replace(",", "")) if found else math.nan


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


def cell_text(v: Any) -> str:
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
    return [[cell_text(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def is_label(frame: pd.DataFrame, j: int) -> bool:
    """Whether column `j` holds labels (set flush left): the first column, a LABEL_COLUMNS
    name, or text with a cell that neither starts like a number nor stands for a missing one
    ("not run", "—", "failed/oom"); every other column holds numbers, set flush right."""
    column = frame.iloc[:, j]
    if j == 0 or str(frame.columns[j]) in LABEL_COLUMNS:
        return True
    if pd.api.types.is_bool_dtype(column):
        return True
    if pd.api.types.is_numeric_dtype(column):
        return False
    texts = [cell_text(v) for v in column]
    return any(not _NUMBER.match(t) and not set(t.split("/")) <= _NO_NUMBER for t in texts)


def _mark_of(ranks: pd.DataFrame | None, i: int, j: int) -> int:
    if ranks is None:
        return 0
    v = ranks.iat[i, j]
    return int(v) if pd.notna(v) else 0


def to_markdown(frame: pd.DataFrame, ranks: pd.DataFrame | None = None) -> str:
    """A pipe table: best **bold**, second best _italic_; labels flush left, numbers flush
    right (`is_label`)."""
    rows = _cells(frame)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            mark = _mark_of(ranks, i, j)
            t = t.replace("|", r"\|").replace("\n", " ")
            row[j] = f"**{t}**" if mark == 1 else f"_{t}_" if mark == 2 else t
    header = [str(c).replace("|", r"\|") for c in frame.columns]
    align = ["left" if is_label(frame, j) else "right" for j in range(frame.shape[1])]
    return pd.DataFrame(rows, columns=header).to_markdown(
        index=False, disable_numparse=True, colalign=align
    )


def to_html(
    frame: pd.DataFrame, ranks: pd.DataFrame | None = None, *, group: str | None = "block"
) -> str:
    """An HTML table: best <strong>, second best <u>, all text escaped; label cells
    (`is_label`) flush left and allowed to wrap, number cells flush right on one line. A
    `group` column (default "block"), when the table has it, becomes a heading row above each
    run of rows sharing its value instead of a column repeated on every row."""
    cells = _cells(frame)
    keep = [j for j, c in enumerate(frame.columns) if str(c) != group]
    kinds = ["label" if is_label(frame, j) else "num" for j in range(frame.shape[1])]
    head = "".join(
        f'<th scope="col" class="{kinds[j]}">{html.escape(str(frame.columns[j]))}</th>'
        for j in keep
    )
    grouped = len(keep) < frame.shape[1]
    at = list(frame.columns).index(group) if grouped else -1
    body, last = [], None
    for i, row in enumerate(cells):
        if grouped and row[at] != last:
            last = row[at]
            body.append(
                f'<tr class="group"><th colspan="{len(keep)}" scope="colgroup">'
                f"{html.escape(last)}</th></tr>"
            )
        tds = []
        for j in keep:
            t = html.escape(row[j])
            mark = _mark_of(ranks, i, j)
            t = f"<strong>{t}</strong>" if mark == 1 else f"<u>{t}</u>" if mark == 2 else t
            tds.append(f'<td class="{kinds[j]}">{t}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(body) + "</tbody></table>"


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
    spec = "".join("l" if is_label(frame, j) else "r" for j in range(frame.shape[1]))
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


def to_latex_tables(tables: list[dict[str, Any]], footnotes: list[str] | tuple[str, ...]) -> str:
    """Several booktabs tables that belong together (one too wide for a page, split): each dict
    holds `to_latex`'s arguments (frame, caption, label, ranks, groups); the shared footnotes
    follow the last table, and each other table points to them."""
    out = []
    for i, t in enumerate(tables):
        last = i == len(tables) - 1
        see = [f'Notes under the table "{tables[-1]["caption"]}".']
        out.append(to_latex(**t, footnotes=footnotes if last else see))
    return "\n".join(out)


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
