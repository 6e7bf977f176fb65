"""Result tables from the long records frame, rendered as markdown, LaTeX (booktabs) and CSV.

Numbers live in plain frames (`score_table`, `efficiency_table`: what CSV gets); people and papers
get formatted frames (`wide_table`, `efficiency_display`) with a parallel frame of ranks
(1 = best, 2 = second, 0 = unmarked) so every renderer draws its own marks, and a list of
footnotes. Failed, OOM and diverged cells are shown as such and missing cells are listed: nothing
is dropped silently.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bench.stats import (
    BLOCK,
    CORRECTION,
    LOWER_IS_BETTER,
    MIN_PAIRS,
    block_title,
    bootstrap_ci,
    pme,
    ppe,
    ppt,
    prepare,
)

__all__ = [
    "COMPOSITE_DEFINITIONS",
    "COMPOSITE_FOOTNOTE",
    "Table",
    "efficiency_display",
    "efficiency_table",
    "latex_escape",
    "score_table",
    "to_csv",
    "to_latex",
    "to_markdown",
    "wide_table",
]

COMPOSITE_DEFINITIONS = (
    "PPT (V-PETL Bench, Xin et al., NeurIPS 2024 D&B) = score · exp(-log10(P / 1e7 + 1)), "
    "P = trainable parameters. "
    "PPE (FPT, Huang et al., MICCAI 2024) = score · exp(-log10(r + 1)), "
    "r = trainable fraction of the backbone, head included. "
    "PME (FPT) = score · exp(-log10(m / m_full + 1)), m = peak training memory, "
    "m_full = full fine-tuning's in the same block. score = the percentage shown."
)
COMPOSITE_FOOTNOTE = (
    COMPOSITE_DEFINITIONS + " Paired tests: two-sided Wilcoxon signed-rank of each method against "
    "the baseline on runs paired by dataset, shots, backbone, seed and split seed; p adjusted by "
    f"{CORRECTION}; no test on fewer than {MIN_PAIRS} pairs."
)

STATUS_ORDER = ("ok", "failed", "oom", "diverged")
# Columns set flush left in LaTeX; everything else is a number, set flush right.
LABEL_COLUMNS = frozenset(
    {"block", "dataset", "backbone", "method", "setting", "metric", "status", "note"}
)
PHASES = (
    ("peak_preload_mem_mb", "preload MB"),
    ("peak_train_mem_mb", "train MB"),
    ("peak_eval_mem_mb", "eval MB"),
)
SCORE_COLUMNS = [
    "block", "dataset", "shots", "backbone", "method", "setting", "metric", "n_ok", "n_total",
    "n_scored", "status", "mean", "std", "ci_lo", "ci_hi",
]  # fmt: skip
EFFICIENCY_COLUMNS = [
    "block", "dataset", "shots", "backbone", "method", "setting", "status", "n_ok",
    "trainable_params", "trainable_pct", "trainable_pct_no_head", *(c for c, _ in PHASES),
    "train_s", "train_img_s", "metric", "score", "ppt", "ppe", "pme", "note",
]  # fmt: skip


class Table(NamedTuple):
    """A formatted frame, its marks (same shape: 1 best, 2 second, 0 none) and its footnotes."""

    frame: pd.DataFrame
    ranks: pd.DataFrame
    footnotes: list[str]


# --------------------------------------------------------------------------- shared helpers


def _ordered_groups(p: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """(dataset, shots_key, backbone, method, setting) groups: datasets, backbones and methods in
    order of first appearance; shots ascending within a dataset, full data last."""
    first = {c: {v: i for i, v in enumerate(pd.unique(p[c]))} for c in [*BLOCK, "method"]}
    first["setting"] = {v: i for i, v in enumerate(pd.unique(p["setting"]))}
    groups = list(p.groupby([*BLOCK, "method", "setting"], sort=False, dropna=False))

    def key(item: tuple[tuple[Any, ...], pd.DataFrame]) -> tuple[float, ...]:
        ds, k, bb, m, s = item[0]
        shots = math.inf if k == 0 else float(k)
        return (
            first["dataset"][ds], first["backbone"][bb], shots, first["method"][m],
            first["setting"][s],
        )  # fmt: skip

    return sorted(groups, key=key)


def _identity(key: tuple[Any, ...], g: pd.DataFrame) -> dict[str, Any]:
    """The columns naming one (block, method, setting) group, as every table's rows start."""
    ds, k, bb, method, setting = key
    return {
        "block": block_title(ds, k, bb),
        "dataset": ds,
        "shots": g["shots"].iloc[0],
        "backbone": bb,
        "method": method,
        "setting": setting,
        "metric": g["metric"].dropna().iloc[0] if g["metric"].notna().any() else None,
    }


def _status_text(statuses: pd.Series) -> str:
    counts = statuses.astype(str).value_counts()
    order = [s for s in STATUS_ORDER if s in counts.index]
    order += sorted(set(counts.index) - set(STATUS_ORDER))
    return ", ".join(f"{int(counts[s])} {s}" for s in order)


def _status_words(status: str) -> str:
    """Status words of a cell without a finished run: "2 failed, 1 oom" -> "failed/oom"."""
    return "/".join(part.split(" ", 1)[1] for part in status.split(", ") if " " in part)


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=df.index, dtype=float)


def _mean(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _first(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size else math.nan


def _decimals(metric: str | None) -> int:
    return 3 if metric == "nll" else 2


def _marks(values: dict[Any, float], *, lower_better: bool, decimals: int) -> dict[Any, int]:
    """1 for the best, 2 for the second best (ties on the rounded values share a mark; after a
    tie for best there is no second)."""
    finite = {k: round(v, decimals) for k, v in values.items() if np.isfinite(v)}
    if not finite:
        return {}
    r = pd.Series(finite).rank(method="min", ascending=lower_better)
    return {k: int(v) for k, v in r.items() if v <= 2}


# --------------------------------------------------------------------------- score tables


def score_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, setting) of the long frame, numbers in percent (nll as is).

    Columns: block, dataset, shots (NA = full data), backbone, method, setting, metric, n_ok,
    n_total, n_scored (ok runs with a finite score: what mean, std and CI are over), status
    ("3 ok", "2 ok, 1 failed"), mean, std (sample, NaN below 2), ci_lo, ci_hi (95% percentile
    bootstrap of the mean over the runs, seed 0; NaN below 2).
    """
    p = prepare(df)
    rows = []
    for key, g in _ordered_groups(p):
        ok = g[g["status"] == "ok"]
        vals = ok["value"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        lo, hi = bootstrap_ci(vals)
        rows.append(
            {
                **_identity(key, g),
                "n_ok": len(ok),
                "n_total": len(g),
                "n_scored": int(vals.size),
                "status": _status_text(g["status"]),
                "mean": float(vals.mean()) if vals.size else math.nan,
                "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
                "ci_lo": lo,
                "ci_hi": hi,
            }
        )
    out = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    out["shots"] = out["shots"].astype("Int64")
    return out


def _columns(scores: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Column title and row label of every score row: backbones only named when several; a
    method with several settings in a block gets one row per setting."""
    several_bb = scores["backbone"].nunique() > 1
    cols = [
        block_title(d, 0 if pd.isna(k) else int(k), b if several_bb else None)
        for d, k, b in zip(scores["dataset"], scores["shots"], scores["backbone"], strict=True)
    ]
    n_set = pd.Series(cols).to_frame("c").assign(m=scores["method"].to_numpy())
    count = n_set.groupby(["c", "m"])["m"].transform("size").to_numpy()
    labels = [
        f"{m} [{s}]" if n > 1 else str(m)
        for m, s, n in zip(scores["method"], scores["setting"], count, strict=True)
    ]
    return cols, labels


def wide_table(scores: pd.DataFrame, *, ci: bool = True) -> Table:
    """Methods as rows, one column per block ("ChestDR 1-shot"), cells "mean ± std [95 % CI]", and an
    "Average" column (the mean of the method's block means, "—" unless the method has a score in
    every block) when there are two blocks or more.

    Cells: "failed"/"oom"/"diverged" when no run of the cell finished, "not run" when the method
    has no run in that block, "(k/n)" appended when only k of n runs count. Each case is listed
    in the footnotes, with the metric of each column.
    """
    s = scores.reset_index(drop=True)
    if s.empty:
        return Table(pd.DataFrame({"method": []}), pd.DataFrame({"method": []}), ["No results."])
    cols, labels = _columns(s)
    col_order = list(dict.fromkeys(cols))
    row_order = list(dict.fromkeys(labels))
    cell = {(lab, c): s.iloc[i] for i, (lab, c) in enumerate(zip(labels, cols, strict=True))}
    named = s["metric"].notna().to_numpy()
    metric = {
        c: next((s["metric"].iloc[i] for i, x in enumerate(cols) if x == c and named[i]), None)
        for c in col_order
    }
    lower = {c: metric[c] in LOWER_IS_BETTER for c in col_order}

    text: dict[tuple[str, str], str] = {}
    means: dict[str, dict[str, float]] = {c: {} for c in col_order}
    not_run, unfinished, partial, several = [], [], [], []
    for c in col_order:
        dec = _decimals(metric[c])
        for lab in row_order:
            r = cell.get((lab, c))
            if r is None:
                text[lab, c] = "not run"
                not_run.append(f"{lab} in {c}")
                continue
            if " [" in lab:
                several.append(f"{lab} in {c}")
            if r["n_ok"] == 0:
                text[lab, c] = _status_words(r["status"])
                unfinished.append(f"{lab} in {c} ({r['status']})")
                continue
            if not np.isfinite(r["mean"]):
                text[lab, c] = "no score"
                unfinished.append(f"{lab} in {c} ({r['status']}, no finite score)")
                continue
            means[c][lab] = float(r["mean"])
            t = f"{r['mean']:.{dec}f}"
            if np.isfinite(r["std"]):
                t += f" ± {r['std']:.{dec}f}"
            if ci and np.isfinite(r["ci_lo"]):
                t += f" [{r['ci_lo']:.{dec}f}, {r['ci_hi']:.{dec}f}]"
            if r["n_scored"] < r["n_total"]:
                t += f" ({r['n_scored']}/{r['n_total']})"
                partial.append(f"{lab} in {c} ({r['status']})")
            text[lab, c] = t

    frame = pd.DataFrame({"method": row_order})
    ranks = pd.DataFrame({"method": [0] * len(row_order)})
    for c in col_order:
        frame[c] = [text[lab, c] for lab in row_order]
        marks = _marks(means[c], lower_better=lower[c], decimals=_decimals(metric[c]))
        ranks[c] = [marks.get(lab, 0) for lab in row_order]

    by_metric: dict[str, list[str]] = {}
    for c in col_order:
        by_metric.setdefault(str(metric[c]), []).append(c)
    notes = [
        "Cells: mean ± sample std over each method's finished runs (seeds and few-shot split "
        "seeds pooled)"
        + (", [95 % percentile-bootstrap CI of the mean over those runs]" if ci else "")
        + ", in percent (nll as is); metric: "
        + "; ".join(f"{m} ({', '.join(cs)})" for m, cs in by_metric.items())
        + ". Best in bold, second best underlined (italic in markdown), per column."
    ]
    if len(col_order) >= 2:
        if len(set(lower.values())) > 1:
            notes.append("No Average: the columns mix higher- and lower-is-better metrics.")
        else:
            avg: dict[str, float] = {}
            lacking = []
            for lab in row_order:
                if all(lab in means[c] for c in col_order):
                    avg[lab] = float(np.mean([means[c][lab] for c in col_order]))
                else:
                    why = [f"{c}: {text[lab, c]}" for c in col_order if lab not in means[c]]
                    lacking.append(f"{lab} ({'; '.join(why)})")
            dec = max(_decimals(metric[c]) for c in col_order)
            frame["Average"] = [f"{avg[lab]:.{dec}f}" if lab in avg else "—" for lab in row_order]
            marks = _marks(avg, lower_better=next(iter(lower.values())), decimals=dec)
            ranks["Average"] = [marks.get(lab, 0) for lab in row_order]
            note = "Average: mean of the block means, only for methods scored in every block"
            notes.append(note + (f"; — for {', '.join(lacking)}." if lacking else "."))
    if not_run:
        notes.append("Not run: " + "; ".join(not_run) + ".")
    if unfinished:
        notes.append("No finished run: " + "; ".join(unfinished) + ".")
    if partial:
        notes.append("(k/n): the score is over k of n runs: " + "; ".join(partial) + ".")
    if several:
        notes.append(
            "Several settings of one method in a block are separate rows, marked [setting]: "
            + "; ".join(several)
            + "."
        )
    return Table(frame, ranks, notes)


# --------------------------------------------------------------------------- efficiency


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cost and composite scores per (block, method, setting), raw numbers.

    Columns: block, dataset, shots, backbone, method, setting, status, n_ok, trainable_params,
    trainable_pct (head's trainables included), trainable_pct_no_head, peak_preload_mem_mb,
    peak_train_mem_mb, peak_eval_mem_mb, train_s, train_img_s (means over ok runs), metric,
    score (mean percent), ppt, ppe, pme, note. PME needs one full fine-tuning setting with a
    peak training memory in the same block; otherwise NaN and `note` says why.
    """
    src = df.reset_index(drop=True)
    p = prepare(src)
    cost_cols = [
        "trainable_params", "trainable_pct", "trainable_pct_no_head", *(c for c, _ in PHASES),
        "train_s", "train_img_s",
    ]  # fmt: skip
    for c in cost_cols:
        p[c] = _num(src, c)
    p["batch_size"], p["batch_size_used"] = _num(src, "batch_size"), _num(src, "batch_size_used")
    rows = []
    smaller: dict[int, str] = {}  # row -> note: costs measured at a batch below the requested one
    for key, g in _ordered_groups(p):
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = {
            **_identity(key, g),
            "status": _status_text(g["status"]),
            "n_ok": len(ok),
        }
        # Parameter counts belong to the setting, known even when training failed.
        for c in ("trainable_params", "trainable_pct", "trainable_pct_no_head"):
            row[c] = _first(g[c])
        for c in (*(c for c, _ in PHASES), "train_s", "train_img_s"):
            row[c] = _mean(ok[c])
        row["score"] = _mean(ok["value"])
        retried = ok[ok["batch_size_used"] < ok["batch_size"]]
        if len(retried):
            used = ", ".join(str(int(b)) for b in sorted(set(retried["batch_size_used"])))
            smaller[len(rows)] = (
                f"costs of {len(retried)} of {len(ok)} runs measured at batch {used} after CUDA "
                f"out of memory (--oom-retry; requested {int(retried['batch_size'].iloc[0])})"
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS[:-4])
    if out.empty:
        return pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    out["ppt"] = ppt(out["score"].to_numpy(float), out["trainable_params"].to_numpy(float))
    out["ppe"] = ppe(out["score"].to_numpy(float), out["trainable_pct"].to_numpy(float) / 100)
    pme_vals, notes = [], []
    for i, r in out.iterrows():
        fulls = out[(out["block"] == r["block"]) & (out["method"] == "full")]
        note = ""
        m_full = math.nan
        if fulls.empty:
            note = "PME: no full fine-tuning run in this block"
        elif len(fulls) > 1:
            note = "PME: several full fine-tuning settings in this block"
        elif not np.isfinite(fulls["peak_train_mem_mb"].iloc[0]):
            note = f"PME: full fine-tuning has no peak training memory ({fulls['status'].iloc[0]})"
        else:
            m_full = float(fulls["peak_train_mem_mb"].iloc[0])
        pme_vals.append(pme(out.at[i, "score"], out.at[i, "peak_train_mem_mb"], m_full))
        notes.append("; ".join(n for n in (note, smaller.get(i, "")) if n))
    out["pme"] = pme_vals
    out["note"] = notes
    out["shots"] = out["shots"].astype("Int64")
    out["trainable_params"] = out["trainable_params"].round().astype("Int64")
    return out


def efficiency_display(eff: pd.DataFrame) -> Table:
    """`efficiency_table` formatted for people: best and second best score, PPT, PPE and PME per
    block marked; memory phases nobody recorded left out (said in a footnote)."""

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None or pd.isna(v) else format(v, spec)

    e = eff.reset_index(drop=True)
    if e.empty:
        return Table(pd.DataFrame({"method": []}), pd.DataFrame({"method": []}), ["No results."])
    frame = pd.DataFrame(
        {
            "block": e["block"],
            "method": e["method"],
            "params": [fmt(v, ",") for v in e["trainable_params"]],
            "train %": [fmt(v, ".3g") for v in e["trainable_pct"]],
            "train % (no head)": [fmt(v, ".3g") for v in e["trainable_pct_no_head"]],
        }
    )
    notes = [
        "params: trainable parameters; train %: trainable share of the backbone without its head, "
        "the head's trainables included; (no head): head excluded. Peak memory per phase in MB, "
        "train s and img/s: means over finished runs. " + COMPOSITE_DEFINITIONS
    ]
    dropped = []
    for col, name in PHASES:
        if e[col].notna().any():
            frame[name] = [fmt(v, ".0f") for v in e[col]]
        else:
            dropped.append(name.split()[0])
    if dropped:
        notes.append(f"No run recorded {' or '.join(dropped)} memory; those columns are left out.")
    frame["train s"] = [fmt(v, ".1f") for v in e["train_s"]]
    frame["img/s"] = [fmt(v, ".0f") for v in e["train_img_s"]]
    dec = [_decimals(m) for m in e["metric"]]
    frame["score"] = [
        _status_words(st) if n == 0 else fmt(v, f".{d}f")
        for v, st, n, d in zip(e["score"], e["status"], e["n_ok"], dec, strict=True)
    ]
    for col, name in (("ppt", "PPT"), ("ppe", "PPE"), ("pme", "PME")):
        frame[name] = [fmt(v, ".2f") for v in e[col]]
    ranks = pd.DataFrame(0, index=frame.index, columns=frame.columns)
    for _, part in e.groupby("block", sort=False):
        lower = part["metric"].iloc[0] in LOWER_IS_BETTER
        for col, name in (("score", "score"), ("ppt", "PPT"), ("ppe", "PPE"), ("pme", "PME")):
            d = _decimals(part["metric"].iloc[0]) if col == "score" else 2
            marks = _marks(
                part[col].astype(float).to_dict(), lower_better=lower and col == "score", decimals=d
            )
            for i, mark in marks.items():
                ranks.at[i, name] = mark
    for note in dict.fromkeys(n for n in e["note"] if n):
        who = [f"{b} / {m}" for b, m, n in zip(e["block"], e["method"], e["note"], strict=True)
               if n == note]  # fmt: skip
        notes.append(f"{note}: {', '.join(who)}.")
    return Table(frame, ranks, notes)


# --------------------------------------------------------------------------- renderers


def _fmt(v: Any) -> str:
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
    return [[_fmt(v) for v in row] for row in frame.itertuples(index=False, name=None)]


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
