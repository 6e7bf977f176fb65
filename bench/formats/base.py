"""What a dataset format answers: whether its files are there, where, at what size, and their arrays.

Each format is one `Format` subclass in its own module of this package; a card's `format` names
one. Every reader returns `{split: SplitArrays}` with images uint8 [N, H, W, C] (C = 1 or 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.cards import DatasetCard
from bench.errors import UserError

SPLITS = ("train", "val", "test")
# on_progress(done, total): called on the caller's thread, first with (0, total), then once
# per decoded image with done increasing by one up to (total, total)
ProgressFn = Callable[[int, int], None]


@dataclass
class SplitArrays:
    """One split: uint8 images [N, H, W, C], labels int64 [N] or float32 multi-hot [N, L],
    each image's path relative to the data root, and its patient/study group when the data
    names one (`bench.group_splits`)."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)


class Format(ABC):
    """One dataset format. The defaults suit a folder of image files read at the card's size."""

    name: str = ""
    # The [reader] keys the format understands (the card check refuses any other).
    reader_keys: tuple[str, ...] = ()
    # Images decoded from files (and resized): the decoded cache applies, and the card must say
    # at what size to read them.
    decodes_files: bool = True

    def location(self, card: DatasetCard, root: Path) -> Path:
        """Where the card's files are expected (named when they are not found)."""
        return card.folder(root)

    def check_available(self, card: DatasetCard, root: Path) -> None:
        """Fail fast, before anything is read, when a file the card names is absent, saying where
        to get the data and what layout is expected."""
        folder = card.folder(root)
        if not folder.is_dir():
            raise missing(card, folder)
        self.check_files(card, folder)

    def check_files(self, card: DatasetCard, folder: Path) -> None:
        """The files the card names inside its (existing) folder; see `check_available`."""
        return None  # a format whose files are the folder itself has nothing more to check

    def check_reader(self, where: str, reader: dict) -> None:
        """Checks of the card's [reader] table beyond its keys and their types."""
        return None  # most formats need none

    def stored_image_size(self, card: DatasetCard, root: Path) -> int | None:
        """The side of the training images as loaded, from file headers without reading the
        data (None when unknown)."""
        return card.image_size  # the readers resize every image to the card's size

    @abstractmethod
    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        """{split: SplitArrays} for the splits the files provide (`check_available` done)."""

    def split_labels(self, card: DatasetCard, root: Path) -> dict[str, np.ndarray] | None:
        """{split: labels} read without the images, for a dry run's statement of what the
        splits can resolve; None where that needs the images read (the default)."""
        return None

    def train_labels_where(self, card: DatasetCard, root: Path) -> tuple[str, str]:
        """(where, hint) for a single-label class without a training image."""
        return f"dataset {card.name!r}", "add training images of it or fix the card's classes"

    def sized(self, card: DatasetCard, name: str, size: int) -> DatasetCard | None:
        """The card read at another stored size, named `<card>_<size>`; None when the format has
        no such variants."""
        return None

    def download(self, card: DatasetCard, root: Path) -> Path:
        """Fetch the card's files into the data root; the path written."""
        raise UserError(
            f"{card.name} is not downloaded by the suite (most medical datasets need a "
            f"registration or licence click). Get it from {card.source}; layout: {card.layout}"
        )


def missing(card: DatasetCard, what: Path, extra: str = "", hint: str = "") -> UserError:
    """The error for a file or folder of the card that is not there: the layout, the source."""
    return UserError(
        f"dataset {card.name!r}: {what} not found.{extra} Expected layout: {card.layout} "
        f"Get it from {card.source}; point --data-root (or $MEDPEFT_DATA) at the folder that "
        f"holds it.{hint}"
    )


# name -> format, in registration order (the order `bench.formats` imports the modules in)
_REGISTRY: dict[str, Format] = {}


def register(cls: type[Format]) -> type[Format]:
    """Class decorator: make the format available under its `name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"format {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def format_names() -> tuple[str, ...]:
    """The registered formats' names."""
    return tuple(_REGISTRY)


def get_format(name: str) -> Format:
    """The format a card names; a KeyError listing the available ones for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; available: {', '.join(format_names())}") from None
