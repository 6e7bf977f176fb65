"""`bench data check`: read a dataset the way `bench run` will and report what would go wrong.

Errors (a missing file, an unreadable image, a label outside the card, too few images for the
shots) are the `UserError`s the readers and the sampler raise, with what to fix. Warnings are
things a run survives but a user should know: a class absent from val or test (its AUC is
undefined), the same image or the same patient/study group in two splits (leakage), a label
never positive in train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cards import DatasetCard
from bench.data import LoadedDataset, few_shot, load_dataset
from bench.formats import SPLITS
from bench.group_splits import overlapping_groups
from bench.splits import split_summary

ProgressFn = Any


@dataclass
class CheckReport:
    card: DatasetCard
    sizes: dict[str, int]
    counts: dict[str, list[int]]  # split -> images per class (positives per label)
    warnings: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    shots_checked: list[tuple[int, int]] = field(default_factory=list)


def class_counts(card: DatasetCard, labels: np.ndarray) -> list[int]:
    """Images per class (positives per label) in label order."""
    every = np.arange(len(labels))
    return list(split_summary(labels, every, task=card.task, classes=card.classes).values())


def check_dataset(
    card: DatasetCard,
    root: Path,
    *,
    shots: list[int] | None = None,
    split_seeds: list[int] | None = None,
    on_progress: ProgressFn | None = None,
) -> CheckReport:
    """Load every split (decoding every image), draw every requested few-shot sample, and
    collect warnings. Raises UserError on the first error."""
    # a check of the files: decode them, never a cached decode (which it writes when absent)
    data = load_dataset(card, root, on_progress=on_progress, decoded_cache="files")
    counts = {s: class_counts(card, data.splits[s].labels.numpy()) for s in SPLITS}
    report = CheckReport(
        card=card,
        sizes={s: len(data.splits[s]) for s in SPLITS},
        counts=counts,
        protocol=data.protocol,
    )
    report.warnings += _absent_classes(card, counts)
    report.warnings += _cross_split_duplicates(data)
    report.warnings += _cross_split_groups(data)
    for k in shots or []:
        for seed in split_seeds or [0]:
            few_shot(data, k, seed, root)
            report.shots_checked.append((k, seed))
    return report


def _absent_classes(card: DatasetCard, counts: dict[str, list[int]]) -> list[str]:
    out = []
    kind = "label never positive" if card.multilabel else "class with no image"
    for split in ("train", "val", "test"):
        absent = [card.classes[i] for i, n in enumerate(counts[split]) if n == 0]
        if absent and not (split == "train" and not card.multilabel):  # loading refuses that
            effect = (
                "it cannot be learned"
                if split == "train"
                else "its AUC/AP is left out of the macro averages"
                if card.multilabel
                else "the macro AUC is undefined (NaN) there"
            )
            out.append(f"{split}: {kind}: {', '.join(absent)}; {effect}")
    return out


def _cross_split_duplicates(data: LoadedDataset) -> list[str]:
    """The same pixels in two splits: test images seen in training inflate every method alike.
    (Duplicates within one split are left alone: they are common and harmless to the protocol.)"""
    seen: dict[bytes, tuple[str, str]] = {}
    clashes: dict[tuple[str, str], list[str]] = {}
    for split in SPLITS:
        part = data.splits[split]
        images = part.images.numpy()
        for i in range(len(images)):
            key = hashlib.blake2b(images[i].tobytes(), digest_size=16).digest()
            name = part.paths[i] if part.paths else f"{split}[{i}]"
            first_split, first_name = seen.setdefault(key, (split, name))
            if first_split != split:
                clashes.setdefault((first_split, split), []).append(f"{first_name} = {name}")
    return [
        f"{len(pairs)} image(s) of {b} also appear in {a} (e.g. {pairs[0]}); remove them from "
        f"one split, or the {b} score is optimistic"
        for (a, b), pairs in clashes.items()
    ]


def _cross_split_groups(data: LoadedDataset) -> list[str]:
    """A patient/study group with images in two splits the files give (a carved val never
    shares one): the model is scored on a patient it was trained or selected on."""
    shared = overlapping_groups({s: data.splits[s].groups for s in SPLITS})
    return [
        f"{len(names)} group(s) have images in both {a} and {b} (e.g. {', '.join(names[:3])}); "
        f"move each group's images into one split, or the {b} score is optimistic"
        for a, b, names in shared
    ]
