"""Whether a table's timings can be compared: one machine, one torch thread count, and no run
timed while other processes were busy (`contended`, bench.measure.MachineLoad's verdict).

Records from before conditions were measured have unknown conditions: never called contended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

MARK = "†"
HIDE_OPTION = "--hide-incomparable-times"
CONDITION_COLUMNS = ["contended", "contention_reason", "others_cpu_share", "torch_threads",
                     "cpu_count", "machine"]  # fmt: skip


def machine(env: dict[str, Any] | None, device: str | None) -> str | None:
    """The machine a record ran on, "host · device name": the GPU a cuda device names, else the
    CPU model; None when the record has no environment."""
    env = env or {}
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        names = env.get("device_names") or []
        index = dev.partition(":")[2]
        i = int(index) if index.isdigit() else 0  # bare "cuda" is the first visible GPU
        name = names[i] if i < len(names) else None
    else:
        name = env.get("cpu_model")
    return " · ".join(str(p) for p in (env.get("hostname"), name) if p) or None


def record_conditions(
    conditions: dict[str, Any] | None, env: dict[str, Any] | None, device: str | None
) -> dict[str, Any]:
    """One record's CONDITION_COLUMNS: contended None when the record has no conditions; the
    thread and CPU counts the environment recorded where the conditions do not say."""
    c, env = conditions or {}, env or {}
    return {
        "contended": c.get("contended"),
        "contention_reason": c.get("contention_reason"),
        "others_cpu_share": c.get("others_cpu_share"),
        "torch_threads": c.get("torch_threads", env.get("torch_num_threads")),
        "cpu_count": c.get("cpu_count", env.get("cpu_count")),
        "machine": machine(env, device),
    }


def contended(rows: pd.DataFrame) -> pd.Series:
    """True where a row was timed under contention; unknown conditions are False."""
    if "contended" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["contended"].eq(True)


def _reason(reason: Any) -> str:
    """A contended run's reason in words (pandas may hold a missing one as NaN)."""
    return reason if isinstance(reason, str) and reason else "the machine was busy"


def _timed(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose timings a table shows: the finished ones."""
    return runs[runs["status"] == "ok"] if "status" in runs else runs


def row_contention(runs: pd.DataFrame) -> dict[str, Any]:
    """contended and contention_reason of a table row averaging `runs`: contended when any of
    its finished runs was; the reason is the worst run's, with how many runs it concerns."""
    timed = _timed(runs)
    flagged = timed[contended(timed)]
    if flagged.empty:
        return {"contended": False, "contention_reason": None}
    worst = flagged.iloc[0]
    if "others_cpu_share" in flagged:
        share = pd.to_numeric(flagged["others_cpu_share"], errors="coerce")
        worst = flagged.iloc[int(np.nanargmax(share))] if share.notna().any() else worst
    reason = _reason(worst.get("contention_reason"))
    if len(flagged) < len(timed):
        reason += f" in {len(flagged)} of {len(timed)} runs"
    return {"contended": True, "contention_reason": reason}


def timing_note(runs: pd.DataFrame) -> str | None:
    """Why the timings of these runs cannot be compared with each other, or None when they can:
    several machines, several torch thread counts, or a run timed under contention."""
    timed = _timed(runs)
    parts = []
    machines = sorted(set(timed["machine"].dropna())) if "machine" in timed else []
    if len(machines) > 1:
        parts.append(f"run on {len(machines)} machines ({'; '.join(machines)})")
    threads = timed["torch_threads"] if "torch_threads" in timed else pd.Series(dtype=float)
    counts = sorted({int(t) for t in pd.to_numeric(threads, errors="coerce").dropna()})
    if len(counts) > 1:
        parts.append(f"with {' and '.join(map(str, counts))} torch threads")
    busy = int(contended(timed).sum())
    if busy:
        parts.append(f"{busy} of {len(timed)} runs timed while other processes were busy")
    return "Timings not comparable: " + ", ".join(parts) + "." if parts else None


def mark_contended(
    frame: pd.DataFrame, columns: Sequence[str], flags: Sequence[bool]
) -> pd.DataFrame:
    """`frame` with MARK after every figure of `columns` in the flagged rows."""
    out = frame.copy()
    for col in columns:
        out[col] = [f"{v}{MARK}" if f and v != "—" else v
                    for v, f in zip(out[col], flags, strict=True)]  # fmt: skip
    return out


def timed_table(
    frame: pd.DataFrame,
    time_columns: Sequence[str],
    rows: pd.DataFrame,
    labels: Sequence[str],
    note: str | None,
    *,
    hide: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """A display table and the notes under it about its timings. `rows` (with `row_contention`'s
    columns) and `labels` name the frame's rows in order; `note` is `timing_note` of the runs
    the table compares. Contended rows get MARK after their times, explained in a footnote;
    with `hide`, a table whose timings are not comparable loses its time columns instead."""
    columns = [c for c in time_columns if c in frame.columns]
    if note and hide:
        left_out = f" Time columns left out ({', '.join(columns)}; {HIDE_OPTION})."
        return frame.drop(columns=columns), [note + left_out]
    flags = contended(rows.reset_index(drop=True)).to_numpy()
    reasons = rows["contention_reason"] if "contention_reason" in rows else [None] * len(rows)
    who: dict[str, list[str]] = {}
    for label, flag, reason in zip(labels, flags, reasons, strict=True):
        if flag:
            who.setdefault(_reason(reason), []).append(str(label))
    notes = [f"{MARK} timed while " + "; ".join(f"{r}: {', '.join(w)}" for r, w in who.items())
             + "."] if who else []  # fmt: skip
    if note:
        notes.append(note + f" Compare times across these rows with care, or pass {HIDE_OPTION}.")
    return mark_contended(frame, columns, flags), notes
