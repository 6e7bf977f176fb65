"""Loading a card's data into tensors, and the views every method shares of it.

A card names a format (`bench.formats`) that turns its files into uint8 arrays, with a validation
split carved from train when the data has none (`bench.dataset_arrays`); this module checks them
against the card, serves them through the decoded cache, and makes the few-shot view of a split
seed (`few_shot`) and the sealed view a hyperparameter search sees.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import decoded_cache as cache
from bench.cards import DatasetCard
from bench.dataset_arrays import read_splits
from bench.errors import UserError
from bench.formats import ProgressFn, SplitArrays
from bench.formats.split_list import read_card_lists
from bench.splits import sample_shots, split_summary


@dataclass
class Split:
    """Images uint8 [N, C, H, W] (C is 1 or 3); labels int64 [N], or float32 multi-hot [N, L]
    for multi-label tasks; `paths` names each image's file where the format has files, `groups`
    each image's patient/study where the data names them."""

    images: Any  # torch.Tensor; typed loosely so importing this module does not import torch
    labels: Any
    paths: list[str] | None = None
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def images_digest(self) -> str:
        """SHA-256 of the images in order, computed once per loaded split (cache keys use it
        for every cell of a grid)."""
        from bench.feature_cache import images_digest

        return images_digest(self.images)

    def subset(self, index: np.ndarray) -> Split:
        import torch

        idx = torch.from_numpy(np.asarray(index, dtype=np.int64))
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        groups = [self.groups[i] for i in index] if self.groups is not None else None
        return Split(self.images[idx], self.labels[idx], paths, groups)


@dataclass
class LoadedDataset:
    card: DatasetCard
    splits: dict[str, Split]
    fingerprint: str
    # How the splits were made from the files: a carved val, the few-shot sample. Recorded.
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.card.classes)

    def sealed(self) -> LoadedDataset:
        """This dataset with its test split sealed: a hyperparameter search trains and selects
        on train and val only, and reaching for test raises TestSplitSealed."""
        return dataclasses.replace(self, splits=SealedSplits(self.splits))


class TestSplitSealed(RuntimeError):
    """Something reached for the test split while it is sealed (during a hyperparameter search)."""


class SealedSplits(Mapping):
    """A dataset's splits without test: iteration yields train and val, and `["test"]` raises.
    Nothing computed from it (features, sizes, scores) can depend on the test split."""

    SEALED = ("test",)

    def __init__(self, splits: Mapping[str, Split]) -> None:
        self._open = {k: v for k, v in splits.items() if k not in self.SEALED}

    def __getitem__(self, key: str) -> Split:
        if key in self.SEALED:
            raise TestSplitSealed(
                "the test split is sealed during the hyperparameter search: trials select on "
                "validation only, and test is read once per seed after the search"
            )
        return self._open[key]

    def __contains__(self, key: object) -> bool:
        return key in self._open  # "test" in splits: False, not a raise

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)


def load_dataset(
    card: DatasetCard,
    root: Path,
    *,
    on_progress: ProgressFn | None = None,
    decoded_cache: str = "use",
) -> LoadedDataset:
    """Read every split into memory as uint8 tensors, checking labels against the card; carve a
    stratified validation split from train (fixed seed) when the files have none.

    Image-file formats go through `bench.decoded_cache`: `decoded_cache="use"` reads the cached
    decode of these exact files when there is one (memory-mapped), "files" always decodes the
    files (and writes the cache when absent), "off" neither reads nor writes it."""
    entry = cache.lookup(card, root, decoded_cache)
    data = cache.read(entry, functools.partial(_to_dataset, card)) if entry else None
    if data is None:
        data = _to_dataset(card, *read_splits(card, root, on_progress))
        if entry:
            cache.write(entry, data)
    return data


def _to_dataset(
    card: DatasetCard, arrays: dict[str, SplitArrays], protocol: dict[str, Any]
) -> LoadedDataset:
    digest = hashlib.sha256()
    splits = {name: _to_split(card, name, part, digest) for name, part in arrays.items()}
    return LoadedDataset(
        card=card, splits=splits, fingerprint=digest.hexdigest()[:16], protocol=protocol
    )


def _to_split(card: DatasetCard, name: str, part: SplitArrays, digest: Any) -> Split:
    """One reader split as tensors, checked against the card; its bytes go into `digest`."""
    import torch

    images, labels = _check_split(card, name, part.images, part.labels)
    digest.update(name.encode())
    digest.update(images)  # the buffer itself: tobytes() would copy a (memory-mapped) split
    digest.update(labels.tobytes())
    return Split(torch.from_numpy(images), torch.from_numpy(labels), part.paths, part.groups)


def _check_split(card: DatasetCard, split: str, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,C,H,W] images and labels of the task's shape, or a UserError naming the split."""
    where = f"dataset {card.name!r}: split {split}"
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]  # grey N,H,W -> N,1,H,W
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise UserError(f"{where}: images must be uint8 with 1 or 3 channels, got {images.shape}")
    n, c = len(images), len(card.classes)
    if card.multilabel:
        labels = np.asarray(labels).astype(np.float32).reshape(len(labels), -1)
        if labels.shape[1] != c:
            raise UserError(f"{where}: {labels.shape[1]} label columns, the card lists {c}")
        if not np.isin(labels, (0.0, 1.0)).all():
            raise UserError(f"{where}: multi-label targets must be 0 or 1")
    else:
        labels = np.asarray(labels).reshape(len(labels), -1)
        if labels.shape[1] != 1:
            raise UserError(
                f"{where}: {labels.shape[1]} labels per image, but task {card.task!r} has one"
            )
        labels = labels[:, 0].astype(np.int64)
        if n and (labels.min() < 0 or labels.max() >= c):
            raise UserError(f"{where}: labels outside 0..{c - 1} (the card lists {c} classes)")
    if n != len(labels) or n == 0:
        raise UserError(f"{where}: {n} images and {len(labels)} labels")
    return np.ascontiguousarray(images), labels


# ---------------------------------------------------------------------------------- few-shot


def few_shot(data: LoadedDataset, shots: int, split_seed: int, root: Path) -> LoadedDataset:
    """The K-shot view of a dataset for one split seed: the same for every method and rerun.

    A card with published few-shot split files (MedFMC) reads them (split seed s -> exp s+1);
    otherwise K images per class are sampled from train (`bench.splits.sample_shots`; with
    patient groups: none of a group with images in val, distinct groups first). Val and test
    are the dataset's own. The sampled indices or file names go into the record.
    """
    card = data.card
    files = card.reader.get("shot_files")
    if files:
        exp = split_seed + 1
        named = {s: p.format(shots=shots, exp=exp) for s, p in files.items()}
        folder = card.folder(root)
        absent = [n for n in named.values() if not (folder / n).is_file()]
        if absent:
            raise UserError(
                f"dataset {card.name!r}: {shots}-shot split file(s) {absent} not found in "
                f"{folder} (split seed {split_seed} reads exp{exp}; the published files are "
                "exp1..exp5, i.e. --split-seeds 0-4)"
            )
        read = read_card_lists(card, root, named)
        # Only the split files' parts are new; test (and val without a file) stay the loaded
        # tensors, shared by every view rather than copied per (shots, split seed).
        digest = hashlib.sha256(f"{data.fingerprint}:{shots}:{split_seed}:".encode())
        splits = {**data.splits, **{s: _to_split(card, s, read[s], digest) for s in read}}
        protocol = {
            **data.protocol,
            "shots": shots,
            "split_seed": split_seed,
            "shots_from": "files",
            "files": named,
            "train_paths": read["train"].paths,
        }
        return LoadedDataset(card, splits, digest.hexdigest()[:16], protocol)
    train = data.splits["train"]
    labels = train.labels.numpy()
    # a patient with images in val contributes none to the sample (val selects the epoch)
    val_groups = data.splits["val"].groups if train.groups is not None else None
    index = sample_shots(
        labels,
        shots,
        split_seed,
        task=card.task,
        classes=card.classes,
        groups=train.groups,
        exclude_groups=sorted(set(val_groups or ())),
    )
    protocol = {
        **data.protocol,
        "shots": shots,
        "split_seed": split_seed,
        "shots_from": "sampled",
        "train_indices": index.tolist(),  # into the full training split, in file order
        "train_counts": split_summary(labels, index, task=card.task, classes=card.classes),
    }
    if train.groups is not None:
        protocol["train_groups"] = len({train.groups[i] for i in index})
    splits = {**data.splits, "train": train.subset(index)}
    digest = hashlib.sha256(f"{data.fingerprint}:{shots}:{split_seed}:".encode())
    digest.update(index.tobytes())
    return LoadedDataset(card, splits, digest.hexdigest()[:16], protocol)
