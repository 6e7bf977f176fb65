"""DeLong's test for two correlated ROC AUCs on the same images (DeLong et al. 1988), in the
O(n log n) midrank form of Sun & Xu (2014, IEEE Signal Processing Letters 21)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["delong_aucs", "delong_test"]


def delong_aucs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of the rows of `scores` [k, N] against 0/1 `labels` [N] and their covariance [k, k]
    (the structural components' sample covariances over positives / m + over negatives / n)."""
    y = np.asarray(labels).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both positive and negative images")
    pos, neg = s[:, y], s[:, ~y]
    tx = rankdata(pos, axis=1)  # midranks among the positives
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives outranking it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(
    labels: np.ndarray, score_a: np.ndarray, score_b: np.ndarray
) -> tuple[float, float, float]:
    """(AUC of a, AUC of b, two-sided p of AUC_a = AUC_b); p is NaN when the difference has no
    variance (e.g. both rank every image the same way)."""
    aucs, cov = delong_aucs(labels, np.vstack([score_a, score_b]))
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        return float(aucs[0]), float(aucs[1]), math.nan
    return float(aucs[0]), float(aucs[1]), float(2.0 * norm.sf(abs(diff) / math.sqrt(var)))
