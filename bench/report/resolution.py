"""What one block's test split can resolve, said under its scores table: how many test images
stand behind each number, the primary metric's 95 % interval at the block's scores, and the
smallest difference between two methods that size tells apart (bench.uncertainty)."""

from __future__ import annotations

import math

import pandas as pd

from bench.metric_table import scale
from bench.uncertainty import metric_uncertainty


def resolution_note(runs: pd.DataFrame, score: float) -> str | None:
    """The sentence for a block's runs (rows of the records frame) at its typical score
    (`score`, in displayed units); None where the records do not say the test split's size, or
    the metric has no closed-form interval here."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    sizes = pd.to_numeric(ok.get("n_test", pd.Series(dtype=float)), errors="coerce").dropna()
    if sizes.empty or not math.isfinite(score):
        return None
    n = int(sizes.mode().iloc[0])
    row = ok[pd.to_numeric(ok["n_test"], errors="coerce") == n].iloc[0]
    metric, task = row["primary_metric"], row.get("task")
    counts = row.get("test_counts")
    factor = scale(metric)
    if not isinstance(counts, list):
        if metric != "accuracy":  # the others need the class counts newer records keep
            return None
        counts = []
    try:
        u = metric_uncertainty(metric, task, counts, n, min(max(score / factor, 0.0), 1.0))
    except (ValueError, IndexError):
        return None
    if u is None or not math.isfinite(u.se):
        return None
    unit = " points" if factor == 100 else ""
    n_val = pd.to_numeric(pd.Series([row.get("n_val")]), errors="coerce").iloc[0]
    chosen = f" (its epoch chosen on {int(n_val)} validation images)" if n_val == n_val else ""
    return (
        f"Each score stands on {n} test images{chosen}: {metric} ±{u.half_width * factor:.1f}{unit} "
        f"(95 %, {u.method}) around {score:.1f}; two methods closer than "
        f"{u.resolvable * factor:.1f}{unit} cannot be told apart on this test split (unpaired; "
        "paired tests on the saved predictions resolve less where methods agree)."
    )
