"""A metric on every bootstrap resample of one run's test predictions, without recomputing it
from scratch B times: a resample is a vector of image counts (weights), and accuracy and ROC AUC
are weighted sums over images, so B resamples cost a few array passes instead of B metric calls.
Values equal `bench.metrics.compute_metrics` on the resampled images (tests check it)."""

from __future__ import annotations

import warnings

import numpy as np

from bench.report.per_class import class_columns

__all__ = ["FAST_METRICS", "counts", "resampled_metric"]

# The metrics computed from weights here; any other goes through compute_metrics per resample.
FAST_METRICS = frozenset({"accuracy", "auc"})


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    """[B, N] how often each image is drawn in each resample, from [B, N'] drawn indices."""
    b = idx.shape[0]
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of `scores` for the `positive` images under each row of weights `w` [B, N]: the
    weighted share of (positive, negative) pairs ranked correctly, ties counting a half (the
    Mann-Whitney form, equal to sklearn's roc_auc_score on the repeated images). NaN where a
    resample has no positive or no negative."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first image of each tie group
    pos = positive[order].astype(float)
    wp = np.add.reduceat(w[:, order] * pos, starts, axis=1)
    wn = np.add.reduceat(w[:, order] * (1.0 - pos), starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn  # negatives scored strictly lower than each group
    pairs = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (wp * (below + 0.5 * wn)).sum(axis=1) / pairs, np.nan)


def _auc(logits: np.ndarray, labels: np.ndarray, task: str, w: np.ndarray) -> np.ndarray:
    """`compute_metrics`' auc under weights, on the per-class scores it ranks
    (`per_class.class_columns`): two classes the log-odds, more the macro mean
    of one-vs-rest AUCs (NaN when a resample lacks a class, as compute_metrics gives NaN),
    multi-label the mean over labels with both classes present."""
    if task != "multilabel" and logits.shape[1] == 2:
        # compute_metrics ranks any two-class task by the log-odds, multiclass included
        return weighted_auc(logits[:, 1] - logits[:, 0], labels == 1, w)
    scores = class_columns(logits, task)
    member = labels > 0 if task == "multilabel" else labels[:, None] == np.arange(scores.shape[1])
    per = np.stack([weighted_auc(scores[:, j], member[:, j], w)
                    for j in range(scores.shape[1])], axis=1)  # fmt: skip
    if task != "multilabel":
        return per.mean(axis=1)
    with warnings.catch_warnings():  # a resample with no label defined is NaN, said below
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per, axis=1)


def resampled_metric(
    logits: np.ndarray, labels: np.ndarray, task: str, metric: str, idx: np.ndarray
) -> np.ndarray:
    """`metric` on each resample (rows of drawn indices `idx` [B, N'])."""
    if metric == "accuracy" and labels.ndim == 1:
        correct = (np.argmax(logits, axis=1) == labels).astype(float)
        return correct[idx].mean(axis=1)
    if metric == "auc":
        return _auc(np.asarray(logits, dtype=np.float64), labels, task,
                    counts(idx, len(labels)))  # fmt: skip
    # bench.metrics imports torch: only a report with saved predictions pays for it
    from bench.metrics import compute_metrics

    return np.array([compute_metrics(logits[i], labels[i], task)[metric] for i in idx])
