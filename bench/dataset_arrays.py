"""The train/val/test arrays a card's files hold: its format reads them, then a validation split
is carved from train when the files have none (never from test), by whole patient/study groups
when the data names them. The decoded cache stores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.cards import DatasetCard
from bench.errors import UserError
from bench.formats import SPLITS, ProgressFn, SplitArrays, get_format
from bench.formats.labels import check_train_classes
from bench.splits import carve_val

# The carved validation split is a property of the dataset, not of a run: one fixed seed.
VAL_SEED = 0


def read_arrays(
    card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
) -> dict[str, SplitArrays]:
    """{split: SplitArrays} for the splits the files provide."""
    fmt = get_format(card.format)
    fmt.check_available(card, root)
    return fmt.read(card, root, on_progress)


def read_splits(
    card: DatasetCard, root: Path, on_progress: ProgressFn | None
) -> tuple[dict[str, SplitArrays], dict[str, Any]]:
    """The train/val/test arrays decoded from the files, val carved when absent; the protocol."""
    arrays = read_arrays(card, root, on_progress)
    _check_train_classes(card, root, arrays["train"].labels)
    if "test" not in arrays:
        raise UserError(
            f"dataset {card.name!r}: no test split found. Expected layout: {card.layout} "
            "(a test split is never carved from the training data)"
        )
    protocol: dict[str, Any] = {}
    if "val" not in arrays:
        train = arrays["train"]
        keep, val = carve_val(
            train.labels, card.val_fraction, VAL_SEED, task=card.task, groups=train.groups
        )
        arrays["val"] = _take(train, val)
        arrays["train"] = _take(train, keep)
        protocol["val"] = {
            "carved_from": "train",
            "fraction": card.val_fraction,
            "seed": VAL_SEED,
            "size": len(val),
        }
        if train.groups is not None:
            protocol["val"]["by_group"] = True  # whole patients/studies went to val
    named = [g for part in arrays.values() if part.groups is not None for g in part.groups]
    if named:  # only then: a dataset without groups keeps the protocol it always had
        protocol["groups"] = len(set(named))
    return {s: arrays[s] for s in SPLITS}, protocol


def _check_train_classes(card: DatasetCard, root: Path, labels: np.ndarray) -> None:
    """Every class of a single-label card has a training image, whatever the format (the image
    readers check this before decoding; an array file is only known once read)."""
    if card.multilabel:
        return  # a label never positive in train is a `bench data check` warning
    where, hint = get_format(card.format).train_labels_where(card, root)
    check_train_classes(labels, card.classes, where, hint)


def _take(arrays: SplitArrays, index: np.ndarray) -> SplitArrays:
    groups = None if arrays.groups is None else [arrays.groups[i] for i in index]
    return SplitArrays(
        arrays.images[index], arrays.labels[index], [arrays.paths[i] for i in index], groups
    )
