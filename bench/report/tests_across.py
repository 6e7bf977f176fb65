"""Methods compared over blocks as Demšar (2006, JMLR 7) compares classifiers over data sets.

A block (dataset, shots, backbone) plays Demšar's data set; a method's score in it is its mean
over seeds x split seeds (`bench.report.block_scores`). Only complete blocks (every method
scored) enter: ranks within a block, the Friedman test (the Iman-Davenport F, as Demšar
recommends), the Nemenyi critical difference, and Holm-corrected z tests against a control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import f as f_dist
from scipy.stats import norm, studentized_range

from bench.report.block_scores import BlockScores
from bench.report.stats import holm

__all__ = [
    "MIN_BLOCKS",
    "MIN_METHODS",
    "Across",
    "cliques",
    "critical_difference",
    "friedman_from_ranks",
    "friedman_test",
]

MIN_BLOCKS = 2
MIN_METHODS = 3


@dataclass(frozen=True)
class Across:
    """The outcome over complete blocks. `reason` is "" when the test ran, else why not; then
    the numbers are NaN. `ranks`: mean rank per method (1 = best), best first. `vs_control`:
    method, mean_rank, z, p, p_holm (the control's row left out)."""

    methods: list[str]
    blocks: list[str]
    excluded: list[str]  # "block title: method (reason), ..." for each incomplete block
    ranks: pd.Series
    chi2: float = math.nan
    f: float = math.nan
    p: float = math.nan  # of the Iman-Davenport F
    cd: float = math.nan
    alpha: float = 0.05
    reason: str = ""
    vs_control: pd.DataFrame = field(default_factory=pd.DataFrame)


def friedman_from_ranks(mean_ranks: np.ndarray, n_blocks: int) -> tuple[float, float, float]:
    """Demšar's Friedman chi2_F = 12N / (k(k+1)) * (sum R_j^2 - k(k+1)^2 / 4) from the mean
    ranks R_j over N blocks (no tie correction: with ties it is conservative), and the
    Iman-Davenport F_F = (N-1) chi2_F / (N(k-1) - chi2_F) on (k-1, (k-1)(N-1)) degrees of
    freedom with its p. Returns (chi2_F, F_F, p)."""
    r = np.asarray(mean_ranks, dtype=float)
    k, n = r.size, n_blocks
    chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(r**2)) - k * (k + 1) ** 2 / 4.0)
    denom = n * (k - 1) - chi2
    if denom <= 0:  # every block ranks the methods identically: F is infinite
        return chi2, math.inf, 0.0
    ff = (n - 1) * chi2 / denom
    return chi2, ff, float(f_dist.sf(ff, k - 1, (k - 1) * (n - 1)))


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi CD = q_alpha sqrt(k(k+1) / (6N)), q_alpha the studentized range quantile (k
    means, infinite df) over sqrt(2); k = 4, N = 14 gives 2.569 * 0.488 = 1.253."""
    q = float(studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def cliques(mean_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal runs of methods (sorted by rank) whose mean ranks all differ by less than `cd`:
    no significant difference within each; single methods are not listed."""
    r = mean_ranks.sort_values(kind="stable")
    names, values = list(r.index), r.to_numpy(float)
    spans = []
    for i in range(len(values)):
        j = i
        while j + 1 < len(values) and values[j + 1] - values[i] < cd:
            j += 1
        if j > i and not (spans and spans[-1][1] >= j):
            spans.append((i, j))
    return [names[i : j + 1] for i, j in spans]


def _excluded(scores: BlockScores, kept: pd.Index) -> list[str]:
    """Each block left out, with the methods it lacks and why."""
    out = []
    for title in scores.means.index.difference(kept, sort=False):
        why = scores.reasons.loc[title]
        out.append(f"{title}: " + ", ".join(f"{m} ({why[m]})" for m in why.index if why[m]))
    return out


def friedman_test(scores: BlockScores, control: str | None, *, alpha: float = 0.05) -> Across:
    """Friedman / Iman-Davenport over the complete blocks of `scores`, the Nemenyi CD, and each
    method against `control` by z = (R_i - R_c) / sqrt(k(k+1) / (6N)), two-sided, Holm over the
    k - 1 comparisons (Demšar, section 3.2.2). Methods without any score are left out first."""
    kept = scores.complete()
    methods = list(kept.columns)
    k, n = len(methods), len(kept)
    excluded = _excluded(scores, kept.index)
    ranks = kept.rank(axis=1, ascending=False, method="average").mean().sort_values(kind="stable")
    base = Across(methods, list(kept.index), excluded, ranks, alpha=alpha)
    if k < MIN_METHODS or n < MIN_BLOCKS:
        why = (
            f"{k} method(s) with a score in every block kept; the test needs {MIN_METHODS}"
            if k < MIN_METHODS
            else f"{n} complete block(s); the test needs {MIN_BLOCKS}"
        )
        return replace(base, reason=why)
    chi2, ff, p = friedman_from_ranks(ranks.to_numpy(float), n)
    cd = critical_difference(k, n, alpha)
    vs = pd.DataFrame(columns=["method", "mean_rank", "z", "p", "p_holm"])
    if control in ranks.index:
        se = math.sqrt(k * (k + 1) / (6.0 * n))
        others = ranks.drop(control)
        z = (others - ranks[control]) / se
        pz = 2.0 * norm.sf(np.abs(z.to_numpy(float)))
        vs = pd.DataFrame(
            {"method": others.index, "mean_rank": others.to_numpy(float), "z": z.to_numpy(float),
             "p": pz, "p_holm": holm(pz)}
        )  # fmt: skip
    return replace(base, chi2=chi2, f=ff, p=p, cd=cd, vs_control=vs)
