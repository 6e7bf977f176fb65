"""The summary per block: what the terminal shows and `reports/summary.md` holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.metric_table import LOWER_IS_BETTER, scale
from bench.records import write_atomic
from bench.report.conditions import timed_table, timing_note
from bench.report.demo_mark import DEMO_LINE, is_demo
from bench.report.efficiency import efficiency_table
from bench.report.formats import fmt, to_markdown
from bench.report.frame import memory_words
from bench.report.missing import MISSING_NOTE, missing_in_grid
from bench.report.missing import lines as missing_lines
from bench.report.names import block_title
from bench.report.resolution import resolution_note
from bench.report.stats import prepare
from bench.report.tables import mark_shown, score_table
from bench.report.tuning import budget_note, tuning_markdown

TIME_COLUMNS = ("train s", "img/s")


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, setting): the score table's numbers (`score_table`:
    mean ± std over seeds, failed cells counted, not dropped) beside the efficiency table's costs
    and the mean accuracy and ECE; what the terminal and summary.md show. `timing_note`: whether
    the block's timings are comparable (`bench.report.conditions.timing_note`)."""
    if df.empty:
        return pd.DataFrame()
    keys = ["block", "method", "setting"]
    scores = score_table(df)
    costs = ["trainable_params", "trainable_pct", "peak_train_mem_mb", "train_s", "train_img_s",
             "contended", "contention_reason"]  # fmt: skip
    out = scores.merge(efficiency_table(df)[keys + costs], on=keys, how="left")
    group = ["dataset", "shots_key", "backbone", "method", "setting"]
    p = prepare(df)
    val = _numbers(df, "val_primary") * p["metric"].map(scale).astype(float).to_numpy()
    extra = p.assign(
        accuracy=_numbers(df, "accuracy") * 100,
        ece=_numbers(df, "ece") * 100,
        demo=df["demo"].astype(bool).to_numpy(),
        # validation flattery: the selected epoch's validation score minus its test score
        gap=val - p["value"].to_numpy(dtype=float),
        # the epoch kept, counted from 1, out of the epochs trained
        kept=_numbers(df, "selected_epoch") + 1,
        epochs=_numbers(df, "epochs_run"),
    )
    ok = extra["status"] == "ok"
    means = extra[ok].groupby(group, sort=False)[["accuracy", "ece", "gap"]].mean()
    epochs = extra[ok].groupby(group, sort=False)[["kept", "epochs"]].median()
    flags = extra.groupby(group, sort=False)[["demo"]].any()
    out["shots_key"] = out["shots"].fillna(0).astype(int)
    out = out.join(means, on=group).join(epochs, on=group).join(flags, on=group)
    out = out.drop(columns="shots_key")
    keys = zip(extra["dataset"], extra["shots_key"], extra["backbone"], strict=True)
    run_block = pd.Series([block_title(*k) for k in keys], index=df.index)
    notes = {b: timing_note(df[run_block == b]) for b in out["block"].unique()}
    out["timing_note"] = [notes[b] for b in out["block"]]
    resolution = {
        b: resolution_note(df[run_block == b], out.loc[out["block"] == b, "mean"].median())
        for b in out["block"].unique()
    }
    out["resolution_note"] = [resolution[b] for b in out["block"]]
    return out.rename(columns={"n_total": "seeds"})


def _numbers(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column of the records frame as floats (NaN where absent: older records, hand frames)."""
    if column not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One (dataset, backbone) block of the summary formatted for people: `mean ± std` strings,
    rounded costs, short headers so it fits an 80-column terminal."""

    rows = []
    several = summary["method"].duplicated(keep=False).to_numpy()
    for i, (_, s) in enumerate(summary.iterrows()):
        score = fmt(s["mean"], ".2f") + ("" if pd.isna(s["std"]) else f" ± {s['std']:.2f}")
        name = s["method"] + (f" [{s['setting']}]" if several[i] else "")  # two settings
        row = {"method": name, "runs": s["status"], s["metric"]: score}
        if s["metric"] != "accuracy":
            row["acc %"] = fmt(s["accuracy"], ".2f")
        row["gap"] = fmt(s["gap"], "+.2f")
        row["epoch"] = _epoch(s["kept"], s["epochs"])
        row.update(
            {
                "ECE %": fmt(s["ece"], ".2f"),
                "train %": fmt(s["trainable_pct"], ".3g"),
                "train mem MB": fmt(s["peak_train_mem_mb"], ".0f"),
                "train s": fmt(s["train_s"], ".1f"),
                "img/s": fmt(s["train_img_s"], ".0f"),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _epoch(kept: float, epochs: float) -> str:
    """The kept epoch out of those trained, '4/10' (the median over seeds)."""
    if pd.isna(kept) or pd.isna(epochs):
        return "—"
    return f"{kept:g}/{epochs:g}"


# Columns that describe a row rather than rank it.
UNRANKED = ("gap", "epoch")
# Block summary columns where more is better: the scores (`display_table` names them by their
# metric) and throughput; every other shown number is a cost or an error, better lower.
LOWER_SHOWN = frozenset({"ECE %", "train %", "train mem MB", "train s", *LOWER_IS_BETTER})


def summary_marks(table: pd.DataFrame) -> pd.DataFrame:
    """Best and second best per column of one block's display table (1 best, 2 second), on
    the numbers as shown: scores and img/s highest, ECE and costs lowest."""
    ranks = pd.DataFrame(0, index=table.index, columns=table.columns)
    columns = [c for c in table.columns if c not in ("method", "runs", *UNRANKED)]
    mark_shown(table, ranks, columns, higher={c for c in columns if c not in LOWER_SHOWN})
    return ranks


def blocks(
    summary: pd.DataFrame, *, hide_times: bool = False
) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """(title, display table, notes on its timings) per block (dataset, shots, backbone), the
    unit results are compared in; `hide_times`: a block whose timings are not comparable shows
    none (`bench.report.conditions.timed_table`)."""
    out = []
    for title, part in summary.groupby("block", sort=False):
        note = part["timing_note"].iloc[0]
        note = note if isinstance(note, str) else None
        table = display_table(part)
        table, notes = timed_table(
            table, TIME_COLUMNS, part, table["method"], note, hide=hide_times
        )
        sizes = part["resolution_note"].iloc[0]
        out.append((title, table, [sizes, *notes] if isinstance(sizes, str) else notes))
    return out


def render_markdown(
    df: pd.DataFrame, records: list[dict[str, Any]] | None = None, *, hide_times: bool = False
) -> str:
    """summary.md: the summary per block, the search, unfinished and missing cells."""
    summary = summarize(df)
    lines = ["# medpeft-bench summary", ""]
    search = tuning_markdown(records or [])
    if df.empty:
        return "\n".join([*lines, "No records found.", "", *search])
    if is_demo(df):
        lines += [DEMO_LINE, ""]
    for title, table, notes in blocks(summary, hide_times=hide_times):
        lines += [f"## {title}", "", to_markdown(table, summary_marks(table)), ""]
        lines += [line for note in notes for line in (note, "")]
    lines += [
        "Scores are test-split percentages, evaluated once with the epoch selected on validation; "
        "mean ± std over seeds, few-shot split seeds pooled in (sample std). `gap`: the "
        "selected epoch's validation score minus its test score (mean over seeds; positive: "
        "validation flattered the method). `epoch`: the epoch kept of those trained (median "
        "over seeds), by the rule each cell declared (`--select`). `train %`: trainable parameters as a percentage of the "
        "backbone without its head. `img/s`: steady-state training throughput. `train mem MB`: "
        + memory_words(df)
        + ".",
        "",
    ]
    note = budget_note(df)
    if note:
        lines += [note, ""]
    lines += search
    bad = df[df["status"] != "ok"]
    if len(bad):
        lines += ["## Cells that did not finish", ""]
        lines += [f"- `{r.run_id}`: **{r.status}**: {r.error}" for r in bad.itertuples()]
        lines.append("")
    missing = missing_lines(missing_in_grid(df))
    if missing:
        lines += ["## Missing cells", "", MISSING_NOTE, ""]
        lines += [f"- {line}" for line in missing]
        lines.append("")
    return "\n".join(lines)


def write_summary(
    df: pd.DataFrame,
    out_dir: Path,
    records: list[dict[str, Any]] | None = None,
    *,
    hide_times: bool = False,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render_markdown(df, records, hide_times=hide_times)
    return write_atomic(out_dir / "summary.md", text)
