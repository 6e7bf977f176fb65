"""Statistics for the report: t intervals of the mean, composite scores, Pareto front, the
Wilcoxon test over block means, ranks.

Pure numpy/scipy/pandas on the long records frame (`bench.report.frame.records_frame`); never
imports a model. Scores shown to people are percentages (fraction * 100) for every metric except
nll, and differences are in percentage points. The paired tests' baseline is chosen here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist
from scipy.stats import wilcoxon

from bench.errors import UserError
from bench.report.block_scores import block_means
from bench.report.prepared import BLOCK, prepare

__all__ = [
    "BASELINES",
    "BLOCK",
    "CORRECTION",
    "MIN_PAIRS",
    "average_ranks",
    "choose_baseline",
    "holm",
    "mean_interval",
    "paired_vs_baseline",
    "pareto_front",
    "pme",
    "ppe",
    "ppt",
    "prepare",
]

# With 5 pairs the smallest exact two-sided signed-rank p is 2 / 2**5 = 0.0625 > 0.05, so a test
# on fewer than 6 pairs can never reject at 5%; it is not run.
MIN_PAIRS = 6

# The multiple-comparison correction, as stated in the tables' footnote.
CORRECTION = "Holm-Bonferroni over the N methods compared (N = methods for which a test was run)"

ArrayLike = float | Sequence[float] | np.ndarray


# --------------------------------------------------------------------------- intervals


def mean_interval(values: ArrayLike, *, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over runs (n - 1 degrees of freedom); (nan, nan) for fewer
    than 2 finite values, NaNs dropped.

    Over a handful of seeds a percentile bootstrap of the mean only ever spans the values seen
    (with 3 seeds, about their min-max) and has no small-sample widening; the t interval does:
    seeds 81.2, 83.5 and 79.9 give 77.0-86.1, where the bootstrap gave 79.9-83.5. Over seeds x
    split seeds every (seed, split seed) run counts as one independent draw (the split-sampling
    variance is not separated out).
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(x.size)
    half = float(t_dist.ppf((1.0 + level) / 2.0, df=x.size - 1)) * sem
    return (mean - half, mean + half)


# --------------------------------------------------------------------------- composite scores
# PPT is from V-PETL Bench (Xin et al., NeurIPS 2024 Datasets and Benchmarks); PPE and PME are
# attributed to FPT (Huang et al., MICCAI 2024), whose paper text was not available when these
# were written: they follow the formulas as specified for this suite, not a reading of the paper.


def _out(v: np.ndarray) -> float | np.ndarray:
    return float(v) if v.ndim == 0 else v


def ppt(score: ArrayLike, params: ArrayLike) -> float | np.ndarray:
    """V-PETL Bench's PPT = score * exp(-log10(P / 1e7 + 1)); P = trainable parameter count,
    score = the percentage shown."""
    s, p = np.asarray(score, dtype=float), np.asarray(params, dtype=float)
    return _out(s * np.exp(-np.log10(p / 1e7 + 1.0)))


def ppe(score: ArrayLike, fraction: ArrayLike) -> float | np.ndarray:
    """FPT's PPE = score * exp(-log10(r + 1)); r = trainable fraction in [0, 1]
    (trainable_pct / 100)."""
    s, r = np.asarray(score, dtype=float), np.asarray(fraction, dtype=float)
    return _out(s * np.exp(-np.log10(r + 1.0)))


def pme(score: ArrayLike, mem: ArrayLike, mem_full: ArrayLike) -> float | np.ndarray:
    """FPT's PME = score * exp(-log10(m / m_full + 1)); m = peak training memory, m_full = full
    fine-tuning's in the same block (same units)."""
    s = np.asarray(score, dtype=float)
    m, mf = np.asarray(mem, dtype=float), np.asarray(mem_full, dtype=float)
    return _out(s * np.exp(-np.log10(m / mf + 1.0)))


def pareto_front(cost: ArrayLike, score: ArrayLike) -> np.ndarray:
    """Boolean mask of the points no other point dominates (cost <= and score >=, one strict).
    Identical points are both on the front; a point with a NaN never is."""
    c = np.asarray(cost, dtype=float).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if c.shape != s.shape:
        raise ValueError(f"cost and score differ in length: {c.size} vs {s.size}")
    ok = np.isfinite(c) & np.isfinite(s)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = ok.copy()
        others[i] = False
        no_worse = (c <= c[i]) & (s >= s[i])
        better = (c < c[i]) | (s > s[i])
        if np.any(others & no_worse & better):
            front[i] = False
    return front


# --------------------------------------------------------------------------- paired tests


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values over the finite entries (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    n = idx.size
    running = 0.0
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (n - k) * p[i]))
        out[i] = running
    return out


def paired_vs_baseline(df: pd.DataFrame, baseline: str, *, metric: str = "primary") -> pd.DataFrame:
    """Each method against `baseline` over blocks: a pair is one block's two scores (each the
    mean over its seeds x split seeds, `bench.report.block_scores.block_means`), so n counts
    blocks, never runs (runs of one block share its data and are not independent).

    One row per other method: n_blocks (pairs); n_unpaired (blocks the method ran in without a
    pair: no score, several settings, or no baseline score); median_diff (median of method -
    baseline in percentage points, sign flipped for lower-is-better metrics so that positive
    always means the method is better); wins/ties/losses; p (two-sided Wilcoxon signed-rank,
    zero_method="wilcox", exact for small n without ties or zeros); p_holm (CORRECTION); note
    (why no test ran, or what was set aside). Fewer than MIN_PAIRS blocks, or all differences
    zero: no test, p NaN.
    """
    cols = [
        "method", "n_blocks", "n_unpaired", "median_diff", "wins", "ties", "losses", "p",
        "p_holm", "note",
    ]  # fmt: skip
    scores = block_means(df, metric)
    if baseline not in scores.methods:
        raise ValueError(f"baseline {baseline!r} has no runs; methods: {sorted(scores.methods)}")
    oriented = scores.oriented()
    ran = scores.reasons != "not run"
    rows: list[dict[str, Any]] = []
    for method in scores.methods:
        if method == baseline:
            continue
        both = oriented[method].notna() & oriented[baseline].notna()
        d = (oriented.loc[both, method] - oriented.loc[both, baseline]).to_numpy(float)
        n = int(d.size)
        notes = []
        pval = math.nan
        if n == 0:
            notes.append("no block where both have a score")
        elif n < MIN_PAIRS:
            notes.append(
                f"{n} block(s); a test needs {MIN_PAIRS} (with 5 the smallest p is 0.0625)"
            )
        elif np.all(d == 0):
            notes.append("all differences are zero; test not run")
        else:
            pval = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
            if np.any(d == 0):
                notes.append(f"{int(np.sum(d == 0))} zero differences dropped (wilcox)")
        rows.append(
            {
                "method": method,
                "n_blocks": n,
                "n_unpaired": int((ran[method] & ~both).sum()),
                "median_diff": float(np.median(d)) if n else math.nan,
                "wins": int(np.sum(d > 0)),
                "ties": int(np.sum(d == 0)),
                "losses": int(np.sum(d < 0)),
                "p": pval,
                "note": "; ".join(notes),
            }
        )
    out = pd.DataFrame(rows, columns=[c for c in cols if c != "p_holm"])
    out.insert(len(out.columns) - 1, "p_holm", holm(out["p"].to_numpy(float)) if len(out) else [])
    return out


# --------------------------------------------------------------------------- average ranks


def average_ranks(df: pd.DataFrame, *, metric: str = "primary") -> pd.DataFrame:
    """Average rank per method over blocks (1 = best; ties share the average rank).

    In every block (dataset, shots, backbone) the methods' mean scores over their ok runs are
    ranked, ascending for lower-is-better metrics (ece, nll). A method without an ok score in a
    block (not run, failed, several settings) is not ranked there, which flatters methods that
    skip hard blocks: `not_ranked_in` lists those blocks and `n_blocks` counts the ranked ones.
    Blocks with fewer than two scored methods rank nothing and are listed too.
    """
    scores = block_means(df, metric)
    methods = scores.methods
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    missing: dict[str, list[str]] = {m: [] for m in methods}
    for title, row in scores.oriented().iterrows():
        scored = row.dropna()
        if len(scored) < 2:
            for m in methods:
                missing[m].append(f"{title} (fewer than 2 methods scored)")
            continue
        r = scored.rank(ascending=False, method="average")
        for m in methods:
            if m in r.index:
                ranks[m].append(float(r[m]))
            else:
                missing[m].append(f"{title} ({scores.reasons.at[title, m]})")
    out = pd.DataFrame(
        {
            "method": methods,
            "mean_rank": [float(np.mean(ranks[m])) if ranks[m] else math.nan for m in methods],
            "n_blocks": [len(ranks[m]) for m in methods],
            "not_ranked_in": ["; ".join(missing[m]) for m in methods],
        }
    )
    return out.sort_values(["mean_rank", "method"], na_position="last").reset_index(drop=True)


# --------------------------------------------------------------------------- baseline

# The default baseline of the paired tests: the first of these that the records have.
BASELINES = ("full", "linear")


def choose_baseline(df: pd.DataFrame, wanted: str | None = None) -> str | None:
    """The paired tests' baseline: `wanted` (a UserError when no record has it), else the first
    of BASELINES present, else None (no tests)."""
    methods = set(df["method"]) if not df.empty else set()
    if wanted is None:
        # A fixed-hyperparameter baseline first, else its tuned rows (a tune-only folder).
        tuned = {m.split(" (tuned", 1)[0]: m for m in sorted(methods) if " (tuned" in m}
        return next((m for m in BASELINES if m in methods), None) or next(
            (tuned[m] for m in BASELINES if m in tuned), None
        )
    if wanted not in methods:
        raise UserError(
            f"--baseline {wanted}: no record of that method; methods in the report: "
            + (", ".join(sorted(methods)) or "none")
        )
    return wanted
