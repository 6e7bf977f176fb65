"""The runs whose test predictions the report can read, grouped for per-class statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.report.block_scores import usable_runs
from bench.report.prepared import prepare

__all__ = ["Loader", "by_block", "prediction_runs"]

# (path, the record's sha256 of it or None) -> {"test": obj with .logits [N, C] and .labels, ...}
Loader = Callable[[str, str | None], Any]


def prediction_runs(df: pd.DataFrame, load: Loader) -> tuple[pd.DataFrame, list[str]]:
    """One row per scored run (ok, one setting in its block) with a readable predictions file:
    block, method, seed, split_seed, metric, task, classes, logits, labels (the test split's);
    and a note per run whose file could not be read."""
    runs = usable_runs(prepare(df))
    rows, notes, without = [], [], []
    for i, run in runs.iterrows():
        src = df.iloc[i]
        path = src.get("predictions_file")
        if not isinstance(path, str) or not path:
            without.append(str(src.get("run_id", i)))
            continue
        sha = src.get("predictions_sha256")
        try:
            test = load(path, sha if isinstance(sha, str) else None)["test"]
        except (OSError, KeyError, ValueError, UserError) as exc:
            notes.append(f"{src.get('run_id', path)}: predictions not read ({exc})")
            continue
        rows.append(
            {"block": run["block"], "method": run["method"], "seed": run["seed"],
             "split_seed": run["split_seed"], "metric": run["metric"], "task": src.get("task"),
             "classes": src.get("classes"), "logits": np.asarray(test.logits, dtype=float),
             "labels": np.asarray(test.labels)}
        )  # fmt: skip
    if without:
        # Records from before predictions were saved, or whose file could not be written.
        shown = ", ".join(without[:5]) + (
            f" and {len(without) - 5} more" if len(without) > 5 else ""
        )
        notes.append(
            f"{len(without)} run(s) without saved test predictions, left out here: {shown}"
        )
    return pd.DataFrame(rows), notes


def by_block(runs: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(block title, its runs) in the frame's order; nothing for an empty frame."""
    if runs.empty:
        return iter(())
    return iter(runs.groupby("block", sort=False))
