"""Score tables from the long records frame: one row per setting, and methods by blocks.

Numbers live in plain frames (`score_table`, and `efficiency.efficiency_table`: what CSV gets);
people and papers get formatted frames (`wide_table`, `efficiency.efficiency_display`) with a
parallel frame of ranks (1 = best, 2 = second, 0 = unmarked) so every renderer
(`bench.report.formats`) draws its own marks, and a list of footnotes. Failed, OOM and diverged
cells are shown as such and missing cells are listed: nothing is dropped silently.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bench import metric_table
from bench.metric_table import LOWER_IS_BETTER
from bench.report.formats import shown_number
from bench.report.names import block_title
from bench.report.stats import BLOCK, mean_interval, prepare

STATUS_ORDER = ("ok", "failed", "oom", "diverged")
SCORE_COLUMNS = [
    "block", "dataset", "shots", "backbone", "method", "setting", "metric", "n_ok", "n_total",
    "n_scored", "status", "mean", "std", "ci_lo", "ci_hi",
]  # fmt: skip


class Table(NamedTuple):
    """A formatted frame, its marks (same shape: 1 best, 2 second, 0 none) and its footnotes."""

    frame: pd.DataFrame
    ranks: pd.DataFrame
    footnotes: list[str]


# --------------------------------------------------------------------------- groups


def ordered_groups(p: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
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


def identity(key: tuple[Any, ...], g: pd.DataFrame) -> dict[str, Any]:
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


def status_text(statuses: pd.Series) -> str:
    counts = statuses.astype(str).value_counts()
    order = [s for s in STATUS_ORDER if s in counts.index]
    order += sorted(set(counts.index) - set(STATUS_ORDER))
    return ", ".join(f"{int(counts[s])} {s}" for s in order)


def status_words(status: str) -> str:
    """Status words of a cell without a finished run: "2 failed, 1 oom" -> "failed/oom"."""
    return "/".join(part.split(" ", 1)[1] for part in status.split(", ") if " " in part)


def finite_mean(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def first_finite(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size else math.nan


def best_marks(values: dict[Any, float], *, lower_better: bool, decimals: int) -> dict[Any, int]:
    """1 for the best, 2 for the second best (ties on the rounded values share a mark; after a
    tie for best there is no second)."""
    finite = {k: round(v, decimals) for k, v in values.items() if np.isfinite(v)}
    if not finite:
        return {}
    r = pd.Series(finite).rank(method="min", ascending=lower_better)
    return {k: int(v) for k, v in r.items() if v <= 2}


def mark_shown(
    frame: pd.DataFrame, ranks: pd.DataFrame, columns: list[str], *, higher: Any = ()
) -> None:
    """Set `ranks` to the best and second best of each of `columns` over `frame`'s rows, on the
    numbers as shown (values shown equal tie); lower is better except for columns in `higher`.
    A column whose shown values all tie is left unmarked."""
    for col in columns:
        values = {i: shown_number(str(frame.at[i, col])) for i in frame.index}
        if len({v for v in values.values() if np.isfinite(v)}) < 2:
            continue
        marks = best_marks(values, lower_better=col not in higher, decimals=12)
        for i, mark in marks.items():
            ranks.at[i, col] = mark


# --------------------------------------------------------------------------- score tables


def score_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, setting) of the long frame, numbers in percent (nll as is).

    Columns: block, dataset, shots (NA = full data), backbone, method, setting, metric, n_ok,
    n_total, n_scored (ok runs with a finite score: what mean, std and CI are over), status
    ("3 ok", "2 ok, 1 failed"), mean, std (sample, NaN below 2), ci_lo, ci_hi (95 % Student-t
    interval of the mean over the runs; NaN below 2).
    """
    p = prepare(df)
    rows = []
    for key, g in ordered_groups(p):
        ok = g[g["status"] == "ok"]
        vals = ok["value"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        lo, hi = mean_interval(vals)
        rows.append(
            {
                **identity(key, g),
                "n_ok": len(ok),
                "n_total": len(g),
                "n_scored": int(vals.size),
                "status": status_text(g["status"]),
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
        dec = metric_table.decimals(metric[c])
        for lab in row_order:
            r = cell.get((lab, c))
            if r is None:
                text[lab, c] = "not run"
                not_run.append(f"{lab} in {c}")
                continue
            if " [" in lab:
                several.append(f"{lab} in {c}")
            if r["n_ok"] == 0:
                text[lab, c] = status_words(r["status"])
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
        marks = best_marks(
            means[c], lower_better=lower[c], decimals=metric_table.decimals(metric[c])
        )
        ranks[c] = [marks.get(lab, 0) for lab in row_order]

    by_metric: dict[str, list[str]] = {}
    for c in col_order:
        by_metric.setdefault(str(metric[c]), []).append(c)
    notes = [
        "Cells: mean ± sample std over each method's finished runs (seeds and few-shot split "
        "seeds pooled)"
        + (
            ", [95 % t interval of the mean over those runs, n - 1 degrees of freedom]"
            if ci
            else ""
        )
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
            dec = max(metric_table.decimals(metric[c]) for c in col_order)
            frame["Average"] = [f"{avg[lab]:.{dec}f}" if lab in avg else "—" for lab in row_order]
            marks = best_marks(avg, lower_better=next(iter(lower.values())), decimals=dec)
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
