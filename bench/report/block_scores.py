"""Scores per block (dataset, shots, backbone): the unit methods are compared in.

A method's score in a block is the mean over its ok runs (seeds x split seeds) of one setting; a
method with several settings in a block, or no ok score there, has none, and the reason is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report.names import block_title
from bench.report.prepared import BLOCK, prepare

__all__ = ["BlockScores", "block_means", "seed_means", "usable_runs"]


@dataclass(frozen=True)
class BlockScores:
    """Blocks x methods. `means` and `reasons` are indexed by block title (in the frame's order)
    with one column per method (in the order the runs were listed): `means` is NaN where a
    method has no score, and `reasons` then says why ("not run", "several settings", the
    runs' statuses or "no score"; "" where scored). `lower_better` per block title."""

    means: pd.DataFrame
    reasons: pd.DataFrame
    lower_better: pd.Series
    metric: str

    @property
    def methods(self) -> list[str]:
        return list(self.means.columns)

    def oriented(self) -> pd.DataFrame:
        """`means` with lower-is-better blocks negated, so that higher is better everywhere."""
        sign = np.where(self.lower_better.reindex(self.means.index).to_numpy(bool), -1.0, 1.0)
        return self.means.mul(sign, axis=0)

    def complete(self) -> pd.DataFrame:
        """`oriented()` over the complete blocks only (every method scored), after leaving out
        methods with no score anywhere: what a test over blocks may use."""
        means = self.oriented().dropna(axis=1, how="all")
        return means[means.notna().all(axis=1)]


def usable_runs(p: pd.DataFrame) -> pd.DataFrame:
    """The rows of a prepared frame (`prepare`) that scores are made of: ok runs with a finite
    value, of (block, method) pairs that ran one setting only; with a `block` column (title)."""
    usable = p[(p["status"] == "ok") & np.isfinite(p["value"])]
    n_settings = usable.groupby([*BLOCK, "method"], sort=False)["setting"].transform("nunique")
    out = usable[n_settings == 1].copy()
    out["block"] = [block_title(*k) for k in out[BLOCK].itertuples(index=False)]
    return out


def block_means(df: pd.DataFrame, metric: str = "primary") -> BlockScores:
    """Each method's mean score per block (see the module doc); displayed units (percent)."""
    p = prepare(df, metric)
    methods = list(pd.unique(p["method"]))
    means = usable_runs(p).groupby([*BLOCK, "method"], sort=False)["value"].mean()
    several = p[(p["status"] == "ok") & np.isfinite(p["value"])]
    several = several.groupby([*BLOCK, "method"], sort=False)["setting"].nunique() > 1
    titles, rows, why, lower = [], [], [], []
    for key, part in p.groupby(BLOCK, sort=False):
        titles.append(block_title(*key))
        ran = set(part["method"])
        row, reasons = [], []
        for m in methods:
            score = means.get((*key, m), np.nan)
            row.append(score)
            if np.isfinite(score):
                reasons.append("")
            elif m not in ran:
                reasons.append("not run")
            elif bool(several.get((*key, m), False)):
                reasons.append("several settings")
            else:
                words = sorted(set(part.loc[part["method"] == m, "status"].astype(str)) - {"ok"})
                reasons.append("/".join(words) or "no score")
        rows.append(row)
        why.append(reasons)
        lower.append(bool(part["lower_better"].iloc[0]))
    return BlockScores(
        means=pd.DataFrame(rows, index=titles, columns=methods, dtype=float),
        reasons=pd.DataFrame(why, index=titles, columns=methods, dtype=object),
        lower_better=pd.Series(lower, index=titles, dtype=bool),
        metric=metric,
    )


def seed_means(df: pd.DataFrame, metric: str = "primary") -> pd.DataFrame:
    """One row per (block, method, seed): the mean over that seed's split seeds. Columns: block
    (title), method, seed, value, n_runs, lower_better; only (block, method) pairs that ran one
    setting."""
    p = usable_runs(prepare(df, metric))
    out = p.groupby(["block", "method", "seed"], sort=False).agg(
        value=("value", "mean"), n_runs=("value", "size"), lower_better=("lower_better", "first")
    )
    return out.reset_index()
