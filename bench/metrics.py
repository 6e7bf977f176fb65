"""Task metrics (classification, multi-label, ordinal) computed from raw logits."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    hamming_loss,
    roc_auc_score,
)
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

__all__ = [
    "ECE_BINS",
    "PRIMARY_METRIC_DEFAULTS",
    "TASKS",
    "classification_metrics",
    "compute_metrics",
    "multilabel_metrics",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("multiclass", "binary", "multilabel", "ordinal")

# Number of equal-width confidence bins for ECE (Guo et al. 2017 convention).
ECE_BINS = 15

PRIMARY_METRIC_DEFAULTS: dict[str, str] = {
    "multiclass": "accuracy",
    "binary": "auc",
    "multilabel": "map",
    "ordinal": "qwk",
}


# --------------------------------------------------------------------------- input handling


def _to_numpy(x: Any, name: str, *, floating: bool) -> np.ndarray:
    """Convert a tensor / array-like to numpy without keeping autograd or device state."""
    if isinstance(x, torch.Tensor):
        # .float() first: bf16/fp16 tensors have no numpy equivalent.
        t = x.detach()
        arr = t.float().cpu().numpy() if floating or t.is_floating_point() else t.cpu().numpy()
    else:
        arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be numeric, got an object array")
    if floating:
        # float64 so softmax/log-loss on large logits do not lose precision.
        return arr.astype(np.float64, copy=False)
    return arr


def _as_int_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Accept integer arrays, or float arrays holding whole numbers (e.g. from a float tensor)."""
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must contain integer class indices, got non-integer values")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")


def _check_logits(logits: np.ndarray, min_cols: int) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, C], got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if n == 0:
        raise ValueError("logits is empty (N == 0); cannot compute metrics")
    if c < min_cols:
        raise ValueError(f"logits must have at least {min_cols} columns, got shape {(n, c)}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or infinite values")


def _prepare_multiclass(logits: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    lg = _to_numpy(logits, "logits", floating=True)
    _check_logits(lg, min_cols=2)
    tg = _as_int_labels(_to_numpy(targets, "targets", floating=False), "targets")
    if tg.ndim != 1:
        raise ValueError(
            f"targets must be 1-D [N] class indices, got shape {tuple(tg.shape)}"
            " (multi-hot targets belong to task='multilabel')"
        )
    if tg.shape[0] != lg.shape[0]:
        raise ValueError(
            f"logits and targets disagree on N: logits {tuple(lg.shape)}, targets {tuple(tg.shape)}"
        )
    c = lg.shape[1]
    if tg.min() < 0 or tg.max() >= c:
        raise ValueError(
            f"targets must lie in [0, {c - 1}] for {c} logit columns,"
            f" got range [{tg.min()}, {tg.max()}]"
        )
    return lg, tg


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Shift by the row max so exp() never overflows.
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nan_with_warning(metric: str, reason: str) -> float:
    logger.warning("%s is undefined (%s); reporting NaN", metric, reason)
    return float("nan")


# --------------------------------------------------------------------------- single-label


def classification_metrics(logits: Any, targets: Any, task: str = "multiclass") -> dict[str, float]:
    """Single-label metrics from logits [N, C] (C >= 2) and integer targets [N].

    ``task`` is "multiclass" or "binary" (binary models emit two logits; class 1 is positive).
    Returns accuracy, balanced_accuracy, macro_f1, auc, ece and nll as Python floats; fractions
    are in [0, 1]. ``auc`` is NaN (with a logged warning) when it is undefined because some
    class has no sample in ``targets``.

    macro_f1 averages over the classes that occur in targets or predictions (sklearn's default
    label set), so a class that is absent and never predicted does not count as F1 = 0.
    """
    if task not in ("multiclass", "binary"):
        raise ValueError(
            f"classification_metrics supports task 'multiclass' or 'binary', got {task!r}"
        )
    lg, tg = _prepare_multiclass(logits, targets)
    c = lg.shape[1]
    if task == "binary" and c != 2:
        raise ValueError(f"task='binary' expects 2 logit columns, got {c}")

    probs = _softmax(lg)
    preds = probs.argmax(axis=1)

    out: dict[str, float] = {}
    out["accuracy"] = float(accuracy_score(tg, preds))
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true" is expected on small/imbalanced eval sets.
        warnings.simplefilter("ignore")
        out["balanced_accuracy"] = float(balanced_accuracy_score(tg, preds))
    out["macro_f1"] = float(f1_score(tg, preds, average="macro", zero_division=0.0))

    present = np.unique(tg)
    if present.size < c:
        missing = sorted(set(range(c)) - set(present.tolist()))
        out["auc"] = _nan_with_warning("auc", f"classes {missing} absent from targets")
    elif c == 2:
        # The log-odds l1 - l0 is a strictly monotone function of softmax p(class 1), so the ROC
        # AUC is identical, but it does not saturate to ties at p == 1.0 for very large logits.
        out["auc"] = float(roc_auc_score(tg, lg[:, 1] - lg[:, 0]))
    else:
        out["auc"] = float(
            roc_auc_score(tg, probs, multi_class="ovr", average="macro", labels=list(range(c)))
        )

    # Top-label ECE on the max softmax probability; probabilities (not logits) are passed so
    # torchmetrics does not re-normalise, and float64 keeps bin assignment exact at edges.
    out["ece"] = float(
        multiclass_calibration_error(
            torch.from_numpy(probs),
            torch.from_numpy(tg),
            num_classes=c,
            n_bins=ECE_BINS,
            norm="l1",
        )
    )
    # cross_entropy uses log-softmax internally: stable for large logits, unlike log(softmax).
    out["nll"] = float(F.cross_entropy(torch.from_numpy(lg), torch.from_numpy(tg)))
    return out


def _quadratic_weighted_kappa(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    # labels=range(C) so the quadratic weights use the full ordinal scale, not just observed grades.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(
            targets, preds, weights="quadratic", labels=list(range(num_classes))
        )
    kappa = float(kappa)
    if not math.isfinite(kappa):
        return _nan_with_warning("qwk", "targets and predictions are one identical constant class")
    return kappa


# --------------------------------------------------------------------------- multi-label


def multilabel_metrics(logits: Any, targets: Any) -> dict[str, float]:
    """Multi-label metrics from logits [N, L] and multi-hot targets {0, 1} [N, L].

    Keys: ``map`` (macro average precision over labels with >= 1 positive), ``auc`` (macro ROC
    AUC over labels with both classes present), ``label_accuracy`` (mean per-label accuracy of
    sigmoid > 0.5), ``ece`` (15-bin binary calibration error per label, averaged over labels)
    and ``nll`` (mean binary cross-entropy with logits over all N * L entries).
    """
    lg = _to_numpy(logits, "logits", floating=True)
    _check_logits(lg, min_cols=1)
    tg = _as_int_labels(_to_numpy(targets, "targets", floating=False), "targets")
    if tg.shape != lg.shape:
        raise ValueError(
            f"multi-label targets must have the same shape as logits [N, L]: "
            f"logits {tuple(lg.shape)}, targets {tuple(tg.shape)}"
        )
    if not np.all((tg == 0) | (tg == 1)):
        raise ValueError("multi-label targets must be multi-hot (values in {0, 1})")

    n_pos = tg.sum(axis=0)
    n = tg.shape[0]
    out: dict[str, float] = {}

    # Ranking metrics use raw logits: sigmoid is monotone, and logits avoid saturation ties.
    has_pos = n_pos > 0
    if has_pos.any():
        out["map"] = float(
            np.mean([average_precision_score(tg[:, j], lg[:, j]) for j in np.flatnonzero(has_pos)])
        )
    else:
        out["map"] = _nan_with_warning("map", "no label has a positive sample")

    both = (n_pos > 0) & (n_pos < n)
    if both.any():
        out["auc"] = float(
            np.mean([roc_auc_score(tg[:, j], lg[:, j]) for j in np.flatnonzero(both)])
        )
    else:
        out["auc"] = _nan_with_warning("auc", "no label has both positive and negative samples")
    if 0 < both.sum() < both.size:
        logger.info(
            "multilabel auc averaged over %d of %d labels (others lack a class)",
            int(both.sum()),
            both.size,
        )

    # sigmoid(x) > 0.5  <=>  x > 0 ; hamming loss is the mean per-entry error rate.
    preds = (lg > 0).astype(np.int64)
    out["label_accuracy"] = float(1.0 - hamming_loss(tg, preds))

    probs_t = torch.sigmoid(torch.from_numpy(lg))
    tg_t = torch.from_numpy(tg)
    eces = [
        float(
            binary_calibration_error(
                probs_t[:, j].contiguous(), tg_t[:, j].contiguous(), n_bins=ECE_BINS, norm="l1"
            )
        )
        for j in range(lg.shape[1])
    ]
    out["ece"] = float(np.mean(eces))
    out["nll"] = float(
        F.binary_cross_entropy_with_logits(torch.from_numpy(lg), tg_t.to(torch.float64))
    )
    return out


# --------------------------------------------------------------------------- reliability


def reliability_bins(logits: Any, targets: Any, task: str, n_bins: int = ECE_BINS) -> dict:
    """Per-bin counts, mean confidence and accuracy for a reliability diagram (Guo et al. 2017).

    Single-label: the top-label confidence (max softmax) against whether the top label is right.
    Multi-label: every entry's sigmoid against its 0/1 target. Bin b holds confidences in
    [b/n, (b+1)/n), the last bin includes 1.0. Empty bins report None; the count-weighted gap
    over bins is the ECE of the same binning.
    """
    lg = _to_numpy(logits, "logits", floating=True)
    if task == "multilabel":
        tg = _as_int_labels(_to_numpy(targets, "targets", floating=False), "targets")
        conf = (1.0 / (1.0 + np.exp(-lg))).ravel()
        correct = tg.ravel().astype(np.float64)
    else:
        lg, tg = _prepare_multiclass(logits, targets)
        probs = _softmax(lg)
        conf = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == tg).astype(np.float64)
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)

    def mean(total: np.ndarray) -> list[float | None]:
        return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]

    return {
        "n_bins": n_bins,
        "count": count.astype(int).tolist(),
        "confidence": mean(sum_conf),
        "accuracy": mean(sum_acc),
    }


# --------------------------------------------------------------------------- dispatch


def compute_metrics(logits: Any, targets: Any, task: str) -> dict[str, float]:
    """Dispatch to the metric set for ``task`` (one of ``TASKS``).

    "ordinal" is evaluated as multiclass (argmax over C grade logits) plus ``qwk``, the
    quadratic weighted Cohen's kappa between target and predicted grades.
    """
    if task in ("multiclass", "binary"):
        return classification_metrics(logits, targets, task=task)
    if task == "ordinal":
        out = classification_metrics(logits, targets, task="multiclass")
        lg, tg = _prepare_multiclass(logits, targets)
        out["qwk"] = _quadratic_weighted_kappa(tg, lg.argmax(axis=1), lg.shape[1])
        return out
    if task == "multilabel":
        return multilabel_metrics(logits, targets)
    raise ValueError(f"unknown task {task!r}; valid tasks are {', '.join(TASKS)}")
