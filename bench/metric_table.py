"""The metrics by name: which tasks produce each, its direction, and how tables show it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "METRICS",
    "TASK_METRICS",
    "TEST_METRICS",
    "Metric",
    "decimals",
    "scale",
]

_SINGLE_LABEL = ("multiclass", "binary", "ordinal")


@dataclass(frozen=True)
class Metric:
    """One metric `bench.metrics.compute_metrics` returns."""

    name: str
    tasks: tuple[str, ...]  # the tasks it is computed for
    higher_is_better: bool = True
    # A fraction in [0, 1] (a probability or a rate) is shown as a percentage; nll is not one.
    percent: bool = True
    decimals: int = 2  # in tables, of the percentage (or of the raw value)
    # A column of the long records frame and a typed field of the record schema; multi-label's
    # per-label accuracy stays in the record only.
    tabulated: bool = True


# In the order of the long frame's columns; a task's metrics are listed in this order too.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", _SINGLE_LABEL),
        Metric("balanced_accuracy", _SINGLE_LABEL),
        Metric("macro_f1", _SINGLE_LABEL),
        Metric("auc", (*_SINGLE_LABEL, "multilabel")),
        Metric("map", ("multilabel",)),
        Metric("label_accuracy", ("multilabel",), tabulated=False),
        Metric("qwk", ("ordinal",)),
        # Calibration (Guo et al. 2017): lower is better.
        Metric("ece", (*_SINGLE_LABEL, "multilabel"), higher_is_better=False),
        Metric(
            "nll", (*_SINGLE_LABEL, "multilabel"), higher_is_better=False, percent=False, decimals=3
        ),
    )
}

HIGHER_IS_BETTER: dict[str, bool] = {name: m.higher_is_better for name, m in METRICS.items()}
LOWER_IS_BETTER = frozenset(name for name, m in METRICS.items() if not m.higher_is_better)
TEST_METRICS = tuple(name for name, m in METRICS.items() if m.tabulated)
# A dataset card's primary metric is one of its task's.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(name for name, m in METRICS.items() if task in m.tasks)
    for task in dict.fromkeys(t for m in METRICS.values() for t in m.tasks)
}


def scale(name: str | None) -> float:
    """What a stored value is multiplied by for display: 100 for a fraction (percent), 1 for a
    metric that is not one (nll); a name not in METRICS counts as a fraction."""
    metric = METRICS.get(name or "")
    return 100.0 if metric is None or metric.percent else 1.0


def decimals(name: str | None) -> int:
    """Decimals of the metric's shown value in tables (2 for a name not in METRICS)."""
    metric = METRICS.get(name or "")
    return 2 if metric is None else metric.decimals
