"""Labels read from text (manifests, annotation files): class names or indices, 0/1 values, and
the check that every class of a single-label dataset has a training image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.errors import UserError

MULTIHOT = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


def class_index(value: str, index: dict[str, int], at: str) -> int:
    if value in index:  # names first: classes named "0".."4" (grades) are names, not indices
        return index[value]
    if value.isdigit() and int(value) < len(index):
        return int(value)
    raise UserError(
        f"{at}: label {value!r} is not a class; expected one of {list(index)} "
        f"or an index 0..{len(index) - 1}"
    )


def multihot(row: dict[str, str], classes: Sequence[str], at: str) -> np.ndarray:
    out = np.zeros(len(classes), dtype=np.float32)
    for i, name in enumerate(classes):
        value = row[name].strip()
        if value not in MULTIHOT:
            raise UserError(
                f"{at}: column {name!r} holds {value!r}; multi-label values must be 0 or 1"
            )
        out[i] = MULTIHOT[value]
    return out


def check_train_classes(
    labels: Sequence[Any] | np.ndarray, classes: Sequence[str], where: str, hint: str = ""
) -> None:
    """Every class of a single-label dataset needs a training image (or its logit never trains);
    `labels` are the training split's class indices (a list or an array)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(
            f"{where}: no training image for class(es) {empty}" + (f"; {hint}" if hint else "")
        )
