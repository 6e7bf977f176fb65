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


def split_row(
    label: str, card: Any, counts: Mapping[str, list[int]], sizes: Mapping[str, int]
) -> SplitRow:
    """The row of one dataset whose splits hold these class counts and images."""

    def at(split: str) -> MetricUncertainty | None:
        if split not in counts:
            return None
        return metric_uncertainty(card.primary_metric, card.task, counts[split], sizes[split],
                                  ASSUMED_SCORE)  # fmt: skip

    return SplitRow(dataset=label, metric=card.primary_metric, val=at("val"), test=at("test"),
                    n_val=sizes["val"], n_test=sizes.get("test"))  # fmt: skip


def split_rows(datasets: Mapping[tuple, Any]) -> list[SplitRow]:
    """One row per distinct (dataset, validation split) of a plan's loaded datasets, keyed as
    `Plan.datasets` is: (name, shots, split seed)."""
    rows, seen = [], set()
    for (name, shots, split_seed), data in datasets.items():
        counts = split_counts(data)
        key = (name, tuple(counts["val"]))
        if key in seen:  # few-shot views share the full validation split
            continue
        seen.add(key)
        label = name if shots is None else f"{name} {shots}-shot x{split_seed}"
        sizes = {split: len(part) for split, part in data.splits.items()}
        rows.append(split_row(label, data.card, counts, sizes))
    return rows


def dry_run_rows(cards: list[Any], root: Any) -> tuple[list[SplitRow], list[str]]:
    """(rows, datasets it cannot tell without reading the images) for a dry run, from the
    labels the formats read alone (bench.formats.Format.split_labels)."""
    from bench.formats import get_format

    rows, unknown = [], []
    for card in cards:
        labels = get_format(card.format).split_labels(card, root)
        if not labels or "val" not in labels:
            unknown.append(card.name)
            continue
        counts = {s: class_counts(a, card.task, len(card.classes)) for s, a in labels.items()}
        rows.append(split_row(card.name, card, counts, {s: len(a) for s, a in labels.items()}))
    return rows, unknown


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
