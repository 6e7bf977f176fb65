"""The long records frame reduced to what comparisons need, and the block they are made in."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.metric_table import LOWER_IS_BETTER, scale

__all__ = ["BLOCK", "prepare"]

# The columns that make a block, the unit methods are compared in (shots_key: 0 = full data).
BLOCK = ["dataset", "shots_key", "backbone"]


def _col(df: pd.DataFrame, name: str, default: Any = np.nan) -> pd.Series:
    """A column, or a constant one when the frame lacks it (older records, hand-made frames)."""
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def prepare(df: pd.DataFrame, metric: str = "primary") -> pd.DataFrame:
    """The long frame reduced to what comparisons need, one row per record.

    Columns: dataset, shots (Int64, NA = full data), shots_key (int, 0 = full data), backbone,
    method, setting, seed, split_seed, status, metric (the metric's name: the record's
    primary_metric when `metric == "primary"`), value (displayed units: percent, nll as is; NaN
    unless status is ok), lower_better (bool).
    """
    shots = pd.to_numeric(_col(df, "shots"), errors="coerce")
    if metric == "primary":
        names = _col(df, "primary_metric", None).astype(object)
        raw = pd.to_numeric(_col(df, "primary"), errors="coerce")
    else:
        names = pd.Series([metric] * len(df), index=df.index, dtype=object)
        raw = pd.to_numeric(_col(df, metric), errors="coerce")
    status = _col(df, "status", None).astype(object)
    factor = names.map(scale).astype(float)
    out = pd.DataFrame(
        {
            "dataset": _col(df, "dataset", None).fillna("(unknown)").astype(object),
            "shots": shots.round().astype("Int64"),
            "shots_key": shots.fillna(0).round().astype(int),
            "backbone": _col(df, "backbone", "").fillna("").astype(object),
            "method": _col(df, "method", None).fillna("(unknown)").astype(object),
            "setting": _col(df, "setting", "").fillna("").astype(object),
            "seed": pd.to_numeric(_col(df, "seed", 0), errors="coerce").fillna(0).astype(int),
            "split_seed": pd.to_numeric(_col(df, "split_seed", 0), errors="coerce")
            .fillna(0)
            .astype(int),
            "status": status,
            "metric": names,
            "value": (raw.astype(float) * factor).where(status == "ok"),
            "lower_better": names.isin(LOWER_IS_BETTER),
        },
        index=df.index,
    )
    return out.reset_index(drop=True)
