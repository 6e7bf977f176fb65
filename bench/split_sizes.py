"""What a grid's validation and test splits can tell apart, said before training: each split's
size and the primary metric's 95 % interval at that size (bench.uncertainty), with a warning
where validation is too small for best-epoch selection to pick more than noise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.uncertainty import ASSUMED_SCORE, MetricUncertainty, class_counts, metric_uncertainty


@dataclass(frozen=True)
class SplitRow:
    """One dataset (or few-shot view) of the grid: its validation and test uncertainty."""

    dataset: str
    metric: str
    val: MetricUncertainty | None
    test: MetricUncertainty | None
    n_val: int
    n_test: int | None  # None: sealed (a search trial's view)


def split_counts(data: Any) -> dict[str, list[int]]:
    """Images per class (positives per label, multi-label) of each split a LoadedDataset opens
    (a sealed one hides test): what a score's uncertainty at this size depends on."""
    return {
        name: class_counts(split.labels, data.card.task, data.num_classes)
        for name, split in data.splits.items()
    }


def _at(metric: str, task: str, counts: list[int], n: int) -> MetricUncertainty | None:
    return metric_uncertainty(metric, task, counts, n, ASSUMED_SCORE)


def split_rows(datasets: Mapping[tuple, Any]) -> list[SplitRow]:
    """One row per distinct (dataset, validation split) of a plan's loaded datasets, keyed as
    `Plan.datasets` is: (name, shots, split seed)."""
    rows, seen = [], set()
    for (name, shots, split_seed), data in datasets.items():
        counts = split_counts(data)
        n_val = len(data.splits["val"])
        key = (name, tuple(counts["val"]))
        if key in seen:  # few-shot views share the full validation split
            continue
        seen.add(key)
        label = name if shots is None else f"{name} {shots}-shot x{split_seed}"
        card = data.card
        test = counts.get("test")
        n_test = None if test is None else len(data.splits["test"])
        rows.append(
            SplitRow(
                dataset=label,
                metric=card.primary_metric,
                val=_at(card.primary_metric, card.task, counts["val"], n_val),
                test=None if test is None else _at(card.primary_metric, card.task, test, n_test),
                n_val=n_val,
                n_test=n_test,
            )
        )
    return rows


def wide_warnings(rows: list[SplitRow]) -> list[str]:
    """A line per dataset whose validation interval is wider than bench.uncertainty.WIDE."""
    out = []
    for row in rows:
        if row.val is not None and row.val.wide:
            out.append(
                f"{row.dataset}: {row.n_val} validation images give {row.metric} "
                f"±{row.val.half_width:.3f} (95 %) at {ASSUMED_SCORE:g}; the epoch picked on "
                "them mostly follows noise (--select last or smooth declares another rule)"
            )
    return out
