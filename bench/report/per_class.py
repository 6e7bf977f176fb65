"""Per-class results from a run's test predictions: precision, recall (sensitivity), F1,
support and one-vs-rest ROC AUC per class, and confusion matrices; pooled over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

__all__ = ["class_columns", "class_scores", "confusion", "pooled_class_scores"]


def class_columns(logits: np.ndarray, task: str) -> np.ndarray:
    """The per-class ranking scores [N, C] one-vs-rest AUCs are taken on: softmax probabilities
    for single-label tasks (binary: the log-odds l1 - l0 for both classes, as
    `bench.metrics` ranks it, with its sign flipped for class 0), logits for multi-label."""
    lg = np.asarray(logits, dtype=float)
    if task == "multilabel":
        return lg
    if task == "binary":
        odds = lg[:, 1] - lg[:, 0]
        return np.stack([-odds, odds], axis=1)
    return softmax(lg, axis=1)


def _predictions(logits: np.ndarray, task: str) -> np.ndarray:
    lg = np.asarray(logits)
    return (lg > 0).astype(int) if task == "multilabel" else lg.argmax(axis=1)


def class_scores(logits: np.ndarray, labels: np.ndarray, task: str) -> pd.DataFrame:
    """One row per class (multi-label: per label), indexed 0..C-1: precision, recall, f1 (of
    the argmax prediction; multi-label: logit > 0), auc (one-vs-rest; NaN when the class or
    its complement is absent) as fractions, and support (test images of the class)."""
    y = np.asarray(labels)
    c = np.asarray(logits).shape[1]
    preds = _predictions(logits, task)
    kw = {} if task == "multilabel" else {"labels": list(range(c))}
    prec, rec, f1, support = precision_recall_fscore_support(
        y, preds, average=None, zero_division=0.0, **kw
    )
    cols = class_columns(logits, task)
    member = y.astype(bool) if task == "multilabel" else y[:, None] == np.arange(c)[None, :]
    aucs = [
        float(roc_auc_score(member[:, j], cols[:, j])) if 0 < member[:, j].sum() < len(y)
        else math.nan
        for j in range(c)
    ]  # fmt: skip
    return pd.DataFrame(
        {"precision": prec, "recall": rec, "f1": f1, "auc": aucs, "support": support.astype(int)}
    )


def confusion(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts [C, C] of single-label predictions: row = true class, column = predicted."""
    c = np.asarray(logits).shape[1]
    return confusion_matrix(labels, _predictions(logits, "multiclass"), labels=list(range(c)))


def pooled_class_scores(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], task: str, classes: Sequence[str] | None = None
) -> pd.DataFrame:
    """`class_scores` averaged over runs (seeds): the mean of per-seed values (a NaN AUC is
    left out of its mean), support of the first run (seeds share the test set), n_seeds, and a
    `class` column (names from `classes`, else the index)."""
    frames = [class_scores(lg, y, task) for lg, y in runs]
    out = pd.concat(frames).groupby(level=0).mean()
    out["support"] = frames[0]["support"]
    out["n_seeds"] = len(frames)
    names = list(classes) if classes is not None and len(classes) == len(out) else None
    out.insert(0, "class", names or [str(i) for i in out.index])
    return out.reset_index(drop=True)
