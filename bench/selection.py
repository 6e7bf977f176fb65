"""Which epoch's weights a cell tests: a rule declared before training (`--select`,
bench.option_values.SELECT_RULES) applied to the validation curve as it grows, so the test split
is read once, on the weights the rule chose.

On a small validation set the best epoch is mostly chosen by noise: with 78 images an AUC near
0.9 has a standard error of about 0.05, wider than the differences between epochs. `last` ignores
validation; `smooth` takes the best epoch of a trailing 3-epoch mean, so that one lucky epoch
weighs a third."""

from __future__ import annotations

import math
from collections.abc import Sequence

SMOOTH_WINDOW = 3


def epoch_key(rule: str, values: Sequence[float]) -> float:
    """The latest epoch's key under `rule`, given the validation scores so far (higher is
    better): the epoch with the greatest key is kept, the earliest among ties. A NaN score (an
    AUC undefined on a one-class validation split) never counts as an improvement."""
    if rule == "last":
        return float(len(values))  # every epoch beats the one before
    if rule == "best":
        window = values[-1:]
    elif rule == "smooth":
        window = values[-SMOOTH_WINDOW:]
    else:
        raise ValueError(f"unknown selection rule {rule!r}")
    mean = math.fsum(window) / len(window)
    return -math.inf if math.isnan(mean) else mean


def selected_epoch(rule: str, values: Sequence[float]) -> int:
    """The epoch `rule` keeps for this validation curve (-1 for an empty one)."""
    best, chosen = -math.inf, -1
    for i in range(len(values)):
        key = epoch_key(rule, values[: i + 1])
        if chosen < 0 or key > best:
            best, chosen = key, i
    return chosen


def selection_record(
    rule: str, metric: str, history: Sequence[dict], epoch: int
) -> dict[str, object]:
    """The record's account of the choice: the rule, the primary metric's validation curve it
    looked at (and, for `smooth`, the trailing means it compared), the epoch kept and its score."""
    curve = [h["val"].get(metric, math.nan) for h in history]
    out: dict[str, object] = {
        "rule": rule,
        "metric": metric,
        "epoch": epoch,
        "val": curve[epoch] if 0 <= epoch < len(curve) else None,
        "curve": curve,
    }
    if rule == "smooth":
        out["smoothed"] = [
            math.fsum(curve[max(0, i - SMOOTH_WINDOW + 1) : i + 1]) / min(i + 1, SMOOTH_WINDOW)
            for i in range(len(curve))
        ]
    return out
