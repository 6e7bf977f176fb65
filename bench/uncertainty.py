"""How uncertain a split's primary metric is at the split's size: closed-form standard errors for
accuracy, ROC AUC and average precision, before training (at an assumed score) and after (at the
measured one). Torch-free, so it can run before any model is built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ASSUMED_SCORE",
    "WIDE",
    "MetricUncertainty",
    "ap_se",
    "binomial_se",
    "class_counts",
    "hanley_mcneil_se",
    "metric_uncertainty",
]

# A typical score of a fine-tuned ViT on a MedMNIST-like task. The pre-training statement uses it
# because the real score is unknown then; accuracy's interval is widest at 0.5, so a lower score
# would only widen it.
ASSUMED_SCORE = 0.85

# A 95 % half-width above five points makes most method-to-method gaps in a results table noise.
WIDE = 0.05

_Z95 = 1.96
_SINGLE_LABEL = ("multiclass", "binary", "ordinal")


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion p over n independent trials, sqrt(p(1-p)/n)."""
    if n < 1:
        return math.nan
    return math.sqrt(p * (1.0 - p) / n)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC (Hanley & McNeil 1982, Radiology 143:29-36)."""
    if n_pos < 1 or n_neg < 1:
        return math.nan
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    a2 = auc * auc
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - a2) + (n_neg - 1) * (q2 - a2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def ap_se(ap: float, n_pos: int) -> float:
    """Standard error of average precision, approximated as binomial over the positives,
    sqrt(AP(1-AP)/n_pos): AP's intervals scale with the number of positives, not of images
    (Boyd, Eng & Page, ECML PKDD 2013, "Area under the precision-recall curve: point estimates
    and confidence intervals")."""
    return binomial_se(ap, n_pos)


def class_counts(labels: Any, task: str, num_classes: int) -> list[int]:
    """Per-class counts of a split's labels: images per class for single-label tasks (labels of
    shape (N,)), positives per label for "multilabel" (0/1 labels of shape (N, C))."""
    arr = np.asarray(labels)
    if task in _SINGLE_LABEL:
        return [int(c) for c in np.bincount(arr.astype(np.int64).ravel(), minlength=num_classes)]
    if task == "multilabel":
        if arr.ndim != 2:
            raise ValueError(f"multilabel labels must be (N, C), got shape {arr.shape}")
        return [int(c) for c in (arr != 0).sum(axis=0)]
    raise ValueError(f"unknown task {task!r}; expected one of {(*_SINGLE_LABEL, 'multilabel')}")


@dataclass(frozen=True)
class MetricUncertainty:
    """A metric's standard error on one split, at the score `value` (a fraction in [0, 1])."""

    metric: str
    value: float
    n: int
    se: float
    per_class: tuple[float, ...] | None
    method: str

    @property
    def half_width(self) -> float:
        """Half-width of the 95 % normal interval, value ± 1.96·se."""
        return _Z95 * self.se

    @property
    def resolvable(self) -> float:
        """The smallest difference between two methods scored on this split that an unpaired
        two-sided 5 % test could tell apart (the difference of two scores has sqrt(2)·se). A paired
        test on the same images resolves less when the methods agree on most images."""
        return _Z95 * math.sqrt(2.0) * self.se

    @property
    def wide(self) -> bool:
        """Whether the 95 % half-width exceeds WIDE."""
        return self.half_width > WIDE


def _macro(per_class: list[float]) -> tuple[float, int]:
    """SE of a macro average of per-class scores, sqrt(sum se_c^2)/C over classes with an SE.
    Treats the classes' estimates as independent (one-vs-rest AUCs share images, so this is an
    approximation)."""
    valid = [s for s in per_class if not math.isnan(s)]
    if not valid:
        return math.nan, 0
    return math.sqrt(sum(s * s for s in valid)) / len(valid), len(valid)


def metric_uncertainty(
    metric: str, task: str, counts: list[int], n: int, value: float
) -> MetricUncertainty | None:
    """Standard error of `metric` scored `value` (a fraction, not a percentage) on a split of n
    images with per-class counts `counts` (class_counts). Macro averages use each class's SE at
    the overall value and combine them as independent (see _macro). None for a metric without a
    closed form here (e.g. F1, QWK)."""
    if not math.isnan(value) and not 0.0 <= value <= 1.0:
        raise ValueError(f"value must be a fraction in [0, 1], got {value}")
    if task not in (*_SINGLE_LABEL, "multilabel"):
        raise ValueError(f"unknown task {task!r}")
    per: list[float]
    if metric == "accuracy":
        return MetricUncertainty(metric, value, n, binomial_se(value, n), None, "binomial")
    if metric == "balanced_accuracy" and task in _SINGLE_LABEL:
        # Balanced accuracy is the mean of per-class recalls, each binomial over its class.
        per = [binomial_se(value, c) for c in counts]
        kind = "binomial per class"
    elif metric == "auc" and task == "binary":
        se = hanley_mcneil_se(value, counts[1], counts[0])
        return MetricUncertainty(metric, value, n, se, None, "Hanley-McNeil")
    elif metric == "auc":
        # One-vs-rest per class, or per label: the rest of the split are the negatives.
        per = [hanley_mcneil_se(value, c, n - c) for c in counts]
        kind = "Hanley-McNeil"
    elif metric == "map":
        per = [ap_se(value, c) for c in counts]
        kind = "binomial over positives"
    else:
        return None
    se, used = _macro(per)
    unit = "labels" if task == "multilabel" else "classes"
    return MetricUncertainty(metric, value, n, se, tuple(per), f"{kind}, macro over {used} {unit}")
