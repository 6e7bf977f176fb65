"""The efficiency table: cost per setting (parameters, memory, time) and the composite scores."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench import metric_table
from bench.metric_table import LOWER_IS_BETTER
from bench.report.conditions import row_contention, timed_table
from bench.report.formats import OPTIONAL_COSTS_NOTE, add_optional_costs, fmt
from bench.report.frame import COST_COLUMNS, memory_words, numeric
from bench.report.stats import pme, ppe, ppt, prepare
from bench.report.tables import (
    Table,
    best_marks,
    finite_mean,
    first_finite,
    identity,
    mark_shown,
    ordered_groups,
    status_text,
    status_words,
)

COMPOSITE_DEFINITIONS = (
    "PPT (V-PETL Bench, Xin et al., NeurIPS 2024 D&B) = score · exp(-log10(P / 1e7 + 1)), "
    "P = trainable parameters. "
    "PPE (FPT, Huang et al., MICCAI 2024) = score · exp(-log10(r + 1)), "
    "r = trainable fraction of the backbone, head included. "
    "PME (FPT) = score · exp(-log10(m / m_full + 1)), m = memory used while training, "
    "m_full = full fine-tuning's in the same block. score = the percentage shown."
)
PHASES = (
    ("peak_preload_mem_mb", "preload MB"),
    ("peak_train_mem_mb", "train MB"),
    ("peak_eval_mem_mb", "eval MB"),
)
# Counted per setting (the same for every seed), unlike the measured costs, which are averaged.
COUNTED = ("train_gflops", "infer_gflops", "overhead_gflops")
EFFICIENCY_COLUMNS = [
    "block", "dataset", "shots", "backbone", "method", "setting", "status", "n_ok",
    "trainable_params", "trainable_pct", "trainable_pct_no_head", *(c for c, _ in PHASES),
    "train_s", "train_img_s", *COST_COLUMNS, "memory_source", "contended", "contention_reason",
    "metric", "score", "ppt", "ppe", "pme", "note",
]  # fmt: skip
TIME_COLUMNS = ("train s", "img/s", "batch-1 ms")
# The display's columns of the second of its two parts (`efficiency_parts`).
SCORE_PART = ("score", "PPT", "PPE", "PME")


def efficiency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cost and composite scores per (block, method, setting), raw numbers.

    Columns: block, dataset, shots, backbone, method, setting, status, n_ok, trainable_params,
    trainable_pct (head's trainables included), trainable_pct_no_head, peak_preload_mem_mb,
    peak_train_mem_mb, peak_eval_mem_mb, train_s, train_img_s, latency_b1_ms, train_j_img,
    eval_j_img (means over ok runs), train_gflops, infer_gflops, overhead_gflops (counted, one
    per setting), memory_source (what the memory figures mean), contended and contention_reason
    (`bench.report.conditions.row_contention`), metric, score (mean percent), ppt, ppe, pme,
    note. PME needs one full fine-tuning setting with a peak training memory in the same block;
    otherwise NaN and `note` says why.
    """
    src = df.reset_index(drop=True)
    p = prepare(src)
    cost_cols = [
        "trainable_params", "trainable_pct", "trainable_pct_no_head", *(c for c, _ in PHASES),
        "train_s", "train_img_s", *COST_COLUMNS,
    ]  # fmt: skip
    for c in cost_cols:
        p[c] = numeric(src, c)
    p["memory_source"] = src["memory_source"] if "memory_source" in src.columns else None
    p["batch_size"], p["batch_size_used"] = (
        numeric(src, "batch_size"),
        numeric(src, "batch_size_used"),
    )
    rows = []
    smaller: dict[int, str] = {}  # row -> note: costs measured at a batch below the requested one
    for key, g in ordered_groups(p):
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = {
            **identity(key, g),
            "status": status_text(g["status"]),
            "n_ok": len(ok),
        }
        # Parameter counts belong to the setting, known even when training failed.
        for c in ("trainable_params", "trainable_pct", "trainable_pct_no_head", *COUNTED):
            row[c] = first_finite(g[c])
        measured = [c for c in COST_COLUMNS if c not in COUNTED]
        for c in (*(c for c, _ in PHASES), "train_s", "train_img_s", *measured):
            row[c] = finite_mean(ok[c])
        row["memory_source"] = "; ".join(sorted(set(ok["memory_source"].dropna())))
        row |= row_contention(src.loc[g.index])
        row["score"] = finite_mean(ok["value"])
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


def efficiency_display(
    eff: pd.DataFrame, *, timing: str | None = None, hide_times: bool = False
) -> Table:
    """`efficiency_table` formatted for people: best and second best score, PPT, PPE and PME per
    block marked; memory phases nobody recorded left out (said in a footnote). `timing`: the
    runs' `bench.report.conditions.timing_note`; with `hide_times` a table it calls not
    comparable shows no times."""

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
        "the head's trainables included; (no head): head excluded. preload/train/eval MB: memory "
        "used in that phase, " + memory_words(eff) + "; train s and img/s: means over finished "
        "runs. " + COMPOSITE_DEFINITIONS
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
    if add_optional_costs(frame, e):
        notes.append(OPTIONAL_COSTS_NOTE)
    labels = [f"{b} / {m}" for b, m in zip(e["block"], e["method"], strict=True)]
    frame, timing_notes = timed_table(frame, TIME_COLUMNS, e, labels, timing, hide=hide_times)
    dec = [metric_table.decimals(m) for m in e["metric"]]
    frame["score"] = [
        status_words(st) if n == 0 else fmt(v, f".{d}f")
        for v, st, n, d in zip(e["score"], e["status"], e["n_ok"], dec, strict=True)
    ]
    for col, name in (("ppt", "PPT"), ("ppe", "PPE"), ("pme", "PME")):
        frame[name] = [fmt(v, ".2f") for v in e[col]]
    ranks = pd.DataFrame(0, index=frame.index, columns=frame.columns)
    for _, part in e.groupby("block", sort=False):
        lower = part["metric"].iloc[0] in LOWER_IS_BETTER
        for col, name in (("score", "score"), ("ppt", "PPT"), ("ppe", "PPE"), ("pme", "PME")):
            d = metric_table.decimals(part["metric"].iloc[0]) if col == "score" else 2
            marks = best_marks(
                part[col].astype(float).to_dict(), lower_better=lower and col == "score", decimals=d
            )
            for i, mark in marks.items():
                ranks.at[i, name] = mark
    _mark_costs(frame, ranks, e["block"])
    notes.append(COST_MARKS_NOTE)
    for note in dict.fromkeys(n for n in e["note"] if n):
        who = [f"{b} / {m}" for b, m, n in zip(e["block"], e["method"], e["note"], strict=True)
               if n == note]  # fmt: skip
        notes.append(f"{note}: {', '.join(who)}.")
    return Table(frame, ranks, notes + timing_notes)


# Costs where more is better; every other cost column is better lower.
HIGHER_COSTS = frozenset({"img/s"})
COST_MARKS_NOTE = (
    "Costs: per block, the lowest value in bold and the second lowest underlined (img/s: the "
    "highest); a column whose values all tie is not marked."
)


def _mark_costs(frame: pd.DataFrame, ranks: pd.DataFrame, blocks: pd.Series) -> None:
    """Best and second best of every cost column per block (`mark_shown`)."""
    costs = [c for c in frame.columns if c not in ("block", "method", *SCORE_PART)]
    for _, rows in frame.groupby(blocks.to_numpy(), sort=False):
        mark_shown(rows, ranks, costs, higher=HIGHER_COSTS)


def efficiency_parts(table: Table) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """`efficiency_display`'s table as two that each fit a page: (title, frame, ranks) of the
    costs, then of the score and composite scores; both keep the block and method columns."""
    frame, ranks = table.frame, table.ranks
    keys = [c for c in ("block", "method") if c in frame]
    scores = [c for c in frame if c in SCORE_PART]
    costs = [c for c in frame if c not in keys and c not in scores]
    parts = [("Costs", costs), ("Score and composite scores", scores)]
    return [(title, frame[keys + cols], ranks[keys + cols]) for title, cols in parts if cols]
