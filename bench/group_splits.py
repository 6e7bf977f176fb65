"""Patient (or study) groups in the splits `bench.splits` makes: images of one group are never
split between train and a carved val, and a few-shot sample takes K distinct groups per class
where it can (one image per patient) before a second image of any patient.

Images of one patient are correlated (same anatomy, device, session): spread over train and val
they make validation scores, and so model selection, optimistic, which is why the cards ask to
keep patients together. Groups are integer codes here (`group_codes`); every draw uses the
caller's seeded generator, so a seed still names a split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def group_codes(groups: Sequence[str], n: int) -> np.ndarray:
    """int64 [n]: each image's group as an index into the sorted distinct group names."""
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group names for {n} images")
    names = np.asarray([str(g) for g in groups], dtype=object)
    _, codes = np.unique(names, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


def carve_groups(
    strata: np.ndarray,
    codes: np.ndarray,
    rng: np.random.Generator,
    n_val: Callable[[int], int],
) -> np.ndarray:
    """Val indices (unsorted) choosing whole groups. Each group belongs to the stratum most of
    its images have (ties: the stratum with fewer images in all, then the lower one); per
    stratum, groups are visited in a seeded random order and one goes to val when it brings the
    stratum's val images closer to `n_val(images in the stratum)`, the image-level target. A
    stratum with >= 2 groups keeps one in train and gives one to val; one with a single group
    stays in train."""
    sizes = np.bincount(codes)
    group_stratum = _group_strata(strata, codes, len(sizes))
    chosen: list[int] = []
    for stratum in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == stratum)
        if len(members) < 2:
            continue
        target = n_val(int(sizes[members].sum()))
        order = rng.permutation(members)
        picked, count = [], 0
        for g in order:
            if len(picked) == len(members) - 1:
                break  # at least one group stays in train
            if abs(count + sizes[g] - target) < abs(count - target):
                picked.append(int(g))
                count += int(sizes[g])
        if not picked:  # every group overshoots: the smallest one, first in the seeded order
            picked = [int(order[np.argmin(sizes[order])])]
        chosen += picked
    return np.flatnonzero(np.isin(codes, chosen))


def _group_strata(strata: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's stratum: its images' most common one, ties to the rarer stratum overall."""
    values, index = np.unique(strata, return_inverse=True)
    index = index.reshape(-1)
    counts = np.zeros((n_groups, len(values)), dtype=np.int64)
    np.add.at(counts, (codes, index), 1)
    totals = np.bincount(index, minlength=len(values))
    # lexicographic: most images in the group, then fewest in the dataset, then the lowest value
    score = counts * (len(strata) + 1) - totals[None, :]
    return values[np.argmax(score, axis=1)]


class GroupDraw:
    """Draws preferring groups with the fewest images drawn so far (over every class of one
    sample), so K distinct groups come before a second image of any group."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes
        self.taken = np.zeros(int(codes.max()) + 1 if len(codes) else 0, dtype=np.int64)

    def draw(self, candidates: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """`k` of `candidates`: a seeded shuffle, then the first image of each least-drawn group,
        then second images, and so on."""
        order = rng.permutation(candidates)
        group = self.codes[order]
        # rank: how many images of the same group precede each one in the shuffled order
        by_group = np.argsort(group, kind="stable")  # keeps the shuffled order within a group
        runs = group[by_group]
        starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
        run_start = np.repeat(starts, np.diff(np.r_[starts, len(runs)]))
        rank = np.empty(len(order), dtype=np.int64)
        rank[by_group] = np.arange(len(order)) - run_start
        key = self.taken[group] + rank
        picks = order[np.argsort(key, kind="stable")[:k]]
        np.add.at(self.taken, self.codes[picks], 1)
        return picks


def overlapping_groups(groups: dict[str, Sequence[str] | None]) -> list[tuple[str, str, list[str]]]:
    """(split a, split b, shared group names sorted) for every pair of splits sharing a group."""
    sets = {s: set(g) for s, g in groups.items() if g is not None}
    names = list(sets)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(sets[a] & sets[b])
            if shared:
                out.append((a, b, shared))
    return out
