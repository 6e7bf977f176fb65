"""Few-shot sampling (N-way K-shot, MedFMC style) and stratified validation carving.

Everything here is a pure function of (labels, arguments, seed): each call builds its own
``np.random.default_rng(seed)``, so the same seed gives the same indices in any process and no
global RNG state (``np.random.seed``) is read or changed.

Single-label tasks ("multiclass", "binary", "ordinal") take int labels of shape [N]; "multilabel"
takes 0/1 labels of shape [N, L]. All returned indices are sorted int64 positions in ``labels``.

``groups`` (a patient or study id per image, `bench.group_splits`) keeps a group's images on one
side of a carved val and spreads a few-shot sample over distinct groups. Without groups every
split is the one this module made before groups existed (tests/splits_pinned.json pins them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.errors import UserError
from bench.group_splits import GroupDraw, carve_groups, group_codes

SINGLE_LABEL_TASKS = ("multiclass", "binary", "ordinal")
MULTILABEL_TASK = "multilabel"

__all__ = ["carve_val", "sample_shots", "split_summary"]


def sample_shots(
    labels: np.ndarray,
    shots: int,
    seed: int,
    *,
    task: str,
    classes: Sequence[str],
    groups: Sequence[str] | None = None,
    exclude_groups: Sequence[str] = (),
) -> np.ndarray:
    """Draw an N-way K-shot training subset; return its sorted int64 indices into ``labels``.

    Single-label: exactly ``shots`` images of every class, without replacement, so "1-shot"
    means len(classes) images.

    Multi-label: MedFMC defines N-way K-shot as K images per label, N*K distinct images in total
    (its published Chest split files hold exactly 19/95/190 images for 1/5/10 shots = 19 labels
    x K). This sampler reads that definition greedily: visit labels from the rarest (fewest
    positives in the pool) to the most common, ties by label index, and for each draw ``shots``
    images positive for that label among those not already picked. Rare labels go first because
    they have the fewest candidates; a common label drawn earlier could use them up. Every label
    thus has at least ``shots`` positives in the subset (often more, from other labels' draws).

    Draws: one ``np.random.default_rng(seed)``, then ``rng.choice(candidates, shots,
    replace=False)`` per class (label order) or per label (visit order), so a seed names a split.

    With ``groups`` (one name per image), images of ``exclude_groups`` (the groups of val) are
    never drawn, and each class's (label's) draw is a seeded shuffle taking images of the groups
    drawn least so far first: K distinct groups per class when the pool has them.
    """
    shots = _check_shots(shots)
    rng = np.random.default_rng(seed)
    codes = None if groups is None else group_codes(groups, len(labels))
    eligible = np.ones(len(labels), dtype=bool)
    if groups is not None and len(exclude_groups):
        eligible = ~np.isin(np.asarray([str(g) for g in groups]), [str(g) for g in exclude_groups])
    if _is_multilabel(task):
        y = _multilabel(labels, classes)
        return _sample_multilabel(y, shots, rng, classes, seed, codes, eligible)
    y = _single_label(labels, classes)
    members = [np.flatnonzero((y == c) & eligible) for c in range(len(classes))]
    short = [(name, len(m)) for name, m in zip(classes, members, strict=True) if len(m) < shots]
    if short:
        listed = ", ".join(f"class {name!r} has {n}" for name, n in short)
        fewest = min(n for _, n in short)
        raise UserError(
            f"cannot sample {shots} shots per class: {listed} training image(s)"
            + _excluded_note(eligible)
            + "; "
            + _fewer_shots_hint(fewest, "class")
        )
    # Classes are drawn in label order from one generator, so the draw depends on the seed only.
    draw = GroupDraw(codes) if codes is not None else None
    picked = [_draw(m, shots, rng, draw) for m in members]
    return _sorted_indices(np.concatenate(picked) if picked else np.empty(0, np.int64))


def carve_val(
    labels: np.ndarray,
    fraction: float,
    seed: int,
    *,
    task: str,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the training pool into (train_indices, val_indices), stratified and seeded.

    Each stratum of n images gives round_half_up(fraction * n) of them to val, clamped so that a
    stratum with >= 2 images keeps at least one in train and gives at least one to val; a stratum
    of 1 image stays in train. Single-label strata are the classes. Multi-label strata are the
    rows' rarest positive label (the positive label with the fewest positives in ``labels``, ties
    by label index); all-negative rows form a stratum of their own. Rounding is half-up (2.5 -> 3),
    not Python's round-half-to-even. Both arrays are sorted int64, disjoint, covering range(N).

    With ``groups`` (one name per image) whole groups go to val, each stratum's as close to the
    same target as whole groups allow (`bench.group_splits.carve_groups`).
    """
    fraction = _check_fraction(fraction)
    strata = _strata(labels, task)
    rng = np.random.default_rng(seed)
    if groups is not None:
        codes = group_codes(groups, len(strata))
        val = _sorted_indices(carve_groups(strata, codes, rng, lambda n: _n_val(n, fraction)))
        in_val = np.zeros(len(strata), dtype=bool)
        in_val[val] = True
        return np.flatnonzero(~in_val).astype(np.int64), val
    val_parts: list[np.ndarray] = []
    # np.unique is sorted, so strata are visited in a fixed order and the draw depends on the seed.
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        n_val = _n_val(len(members), fraction)
        if n_val:
            val_parts.append(rng.permutation(members)[:n_val])
    val = _sorted_indices(np.concatenate(val_parts) if val_parts else np.empty(0, np.int64))
    in_val = np.zeros(len(strata), dtype=bool)
    in_val[val] = True
    return np.flatnonzero(~in_val).astype(np.int64), val


def split_summary(
    labels: np.ndarray, indices: np.ndarray, *, task: str, classes: Sequence[str]
) -> dict[str, int]:
    """Per-class image counts (multi-label: per-label positive counts) of ``labels[indices]``.

    Keys are the class names in label order; classes absent from the subset count 0.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if _is_multilabel(task):
        y = _multilabel(labels, classes)
        counts = y[idx].sum(axis=0)
    else:
        y = _single_label(labels, classes)
        counts = np.bincount(y[idx], minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, counts, strict=True)}


# --- sampling internals ---------------------------------------------------------------------


def _sample_multilabel(
    y: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    classes: Sequence[str],
    seed: int,
    codes: np.ndarray | None,
    eligible: np.ndarray,
) -> np.ndarray:
    """Rare-first greedy draw of ``shots`` new images per label (see ``sample_shots``)."""
    totals = y[eligible].sum(axis=0)
    short = [(name, int(n)) for name, n in zip(classes, totals, strict=True) if n < shots]
    if short:
        listed = ", ".join(f"label {name!r} has {n}" for name, n in short)
        raise UserError(
            f"cannot sample {shots} shots per label: {listed} positive training image(s)"
            + _excluded_note(eligible)
            + "; "
            + _fewer_shots_hint(min(n for _, n in short), "label")
        )
    picked, failed = _greedy(y, shots, rng, codes, eligible)
    if failed is None:
        return _sorted_indices(np.concatenate(picked) if picked else np.empty(0, np.int64))
    label, left = failed
    # Labels share images, so the feasible K is not simply the smallest positive count: find the
    # largest K that works with this seed, so the message can name one that will.
    works = next(
        (
            k
            for k in range(shots - 1, 0, -1)
            if _greedy(y, k, np.random.default_rng(seed), codes, eligible)[1] is None
        ),
        0,
    )
    hint = f"use --shots {works} or fewer" if works else "this pool cannot give even 1 shot"
    raise UserError(
        f"cannot sample {shots} shots per label: label {classes[label]!r} has {int(totals[label])} "
        f"positive training image(s) but only {left} not already drawn for rarer labels "
        f"(labels share images); {hint}"
    )


def _greedy(
    y: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    codes: np.ndarray | None,
    eligible: np.ndarray,
) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    """Run the rare-first draw; return (picks, None) or (picks so far, (label, candidates left))."""
    # Stable argsort keeps label-index order among labels with equal positive counts.
    order = np.argsort(y[eligible].sum(axis=0), kind="stable")
    taken = ~eligible  # an image not eligible counts as already drawn
    grouped = GroupDraw(codes) if codes is not None else None
    picked: list[np.ndarray] = []
    for label in order:
        candidates = np.flatnonzero((y[:, label] == 1) & ~taken)
        if len(candidates) < shots:
            return picked, (int(label), len(candidates))
        draw = _draw(candidates, shots, rng, grouped)
        taken[draw] = True
        picked.append(draw)
    return picked, None


def _draw(
    candidates: np.ndarray, shots: int, rng: np.random.Generator, grouped: GroupDraw | None
) -> np.ndarray:
    """``shots`` of ``candidates``: a plain seeded choice (the draw splits have always used),
    or a group-spreading one."""
    if grouped is None:
        return rng.choice(candidates, size=shots, replace=False)
    return grouped.draw(candidates, shots, rng)


def _excluded_note(eligible: np.ndarray) -> str:
    """Why the pool may be short: images whose group has images in val are not drawn."""
    left_out = int((~eligible).sum())
    if not left_out:
        return ""
    return f" ({left_out} training image(s) left out: their group also has images in val)"


def _n_val(n: int, fraction: float) -> int:
    """Validation share of a stratum of n images (half-up rounding, clamped as documented)."""
    if n < 2:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def _strata(labels: np.ndarray, task: str) -> np.ndarray:
    """Stratum per row: the class, or (multi-label) the rarest positive label, -1 for none."""
    if not _is_multilabel(task):
        return _single_label(labels, None)
    y = _multilabel(labels, None)
    if y.shape[1] == 0:
        return np.full(len(y), -1, dtype=np.int64)
    totals = y.sum(axis=0)
    # Rank labels rare-first (ties by index); a row's stratum is its lowest-ranked positive label.
    order = np.argsort(totals, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    # Rows with no positive get rank len(order), which indexes the appended -1 stratum.
    best = np.where(y == 1, rank[None, :], len(order)).min(axis=1)
    return np.append(order, -1).astype(np.int64)[best]


# --- validation of inputs -------------------------------------------------------------------


def _is_multilabel(task: str) -> bool:
    """True for "multilabel"; the task names come from validated cards, so others are a bug."""
    if task == MULTILABEL_TASK:
        return True
    if task in SINGLE_LABEL_TASKS:
        return False
    raise ValueError(f"task {task!r} is not one of {(*SINGLE_LABEL_TASKS, MULTILABEL_TASK)}")


def _single_label(labels: np.ndarray, classes: Sequence[str] | None) -> np.ndarray:
    """Labels as int64 [N], checked against the class count when one is known."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise UserError(
            f"single-label tasks need one class index per image (shape [N]), got shape "
            f'{y.shape}; flatten [N, 1] labels, or set task = "multilabel" for multi-hot labels'
        )
    if y.size and not (
        np.issubdtype(y.dtype, np.integer)
        or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))
    ):
        raise UserError(f"single-label tasks need integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    hi = len(classes) if classes is not None else None
    if y.size and (y.min() < 0 or (hi is not None and y.max() >= hi)):
        bound = f"0..{hi - 1} ({hi} classes)" if hi is not None else ">= 0"
        raise UserError(
            f"class indices must be {bound}, found {int(y.min())}..{int(y.max())}; "
            "check the card's classes list against the label files"
        )
    return y


def _multilabel(labels: np.ndarray, classes: Sequence[str] | None) -> np.ndarray:
    """Labels as 0/1 int64 [N, L], L checked against the label names when they are known."""
    y = np.asarray(labels)
    want = len(classes) if classes is not None else None
    if y.ndim != 2 or (want is not None and y.shape[1] != want):
        expected = f"[N, {want}]" if want is not None else "[N, L]"
        raise UserError(
            f"multilabel tasks need one 0/1 column per label (shape {expected}), got shape "
            f"{y.shape}; check the card's classes list and the label columns"
        )
    if y.size and not np.isin(y, (0, 1)).all():
        raise UserError(
            "multilabel labels must be 0 or 1; map uncertain or missing entries "
            "(e.g. -1, NaN) to 0 or 1 before training"
        )
    return y.astype(np.int64)


def _check_shots(shots: int) -> int:
    """Shots must be a positive integer."""
    if isinstance(shots, bool) or not isinstance(shots, int | np.integer) or shots < 1:
        raise UserError(f"shots must be an integer >= 1 (images per class), got {shots!r}")
    return int(shots)


def _check_fraction(fraction: float) -> float:
    """The validation fraction must lie strictly between 0 and 1."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise UserError(
            f"val_fraction must be between 0 and 1 (exclusive), e.g. 0.1; got {fraction!r}"
        )
    return value


def _fewer_shots_hint(fewest: int, noun: str) -> str:
    """How to fix a pool that is too small for the requested shots."""
    if fewest == 0:
        return f"a {noun} with no images cannot be sampled; check the data or the card's classes"
    return f"use --shots {fewest} or fewer"


def _sorted_indices(idx: np.ndarray) -> np.ndarray:
    """Indices as a sorted int64 array."""
    return np.sort(np.asarray(idx, dtype=np.int64))
