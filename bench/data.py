"""The dataset catalog (`datasets/*.toml` cards) and the readers that turn a card into tensors."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("multiclass", "binary", "multilabel", "ordinal")
SPLITS = ("train", "val", "test")
DEMO_NOTICE = "DEMO: synthetic images and a suite-pretrained backbone; not a medical result"


@dataclass(frozen=True)
class DatasetCard:
    """One catalog entry: what the data is, how it is laid out, and how it is scored."""

    name: str
    title: str
    task: str
    format: str
    primary_metric: str
    classes: tuple[str, ...]
    modality: str = ""
    layout: str = ""
    source: str = ""
    license: str = ""
    citation: str = ""
    synthetic: bool = False
    epochs: int = 20
    file: str | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    """Images as uint8 [N, C, H, W] (C is 1 or 3) and integer labels [N]."""

    images: Any  # torch.Tensor; typed loosely so importing this module does not import torch
    labels: Any

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def images_digest(self) -> str:
        """SHA-256 of the images in order, computed once per loaded split (cache keys use it
        for every cell of a grid)."""
        from bench.feature_cache import images_digest

        return images_digest(self.images)


@dataclass
class LoadedDataset:
    card: DatasetCard
    splits: dict[str, Split]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.card.classes)


def catalog_dir() -> Path:
    """The card folder: `datasets/` beside the package in a checkout, `bench/_catalog` in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "datasets", here / "_catalog"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("dataset catalog not found (expected datasets/ beside bench/)")


@cache
def load_catalog() -> dict[str, DatasetCard]:
    cards = {}
    for path in sorted(catalog_dir().glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        known = DatasetCard.__dataclass_fields__.keys() - {"extra", "path"}
        fields = {k: v for k, v in raw.items() if k in known}
        fields["classes"] = tuple(fields.get("classes", ()))
        card = DatasetCard(
            **fields, path=path, extra={k: v for k, v in raw.items() if k not in known}
        )
        if card.name == "demo":
            from bench.demo import DEMO_CLASSES

            card = DatasetCard(**{**card.__dict__, "classes": tuple(DEMO_CLASSES)})
        if card.task not in TASKS:
            raise ValueError(f"{path}: task {card.task!r} is not one of {TASKS}")
        cards[card.name] = card
    return cards


def get_card(name: str) -> DatasetCard:
    cards = load_catalog()
    if name not in cards:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(cards)}")
    return cards[name]


def data_root(override: str | Path | None = None) -> Path:
    """--data-root, else $MEDPEFT_DATA, else the user's data directory."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("MEDPEFT_DATA"):
        return Path(os.environ["MEDPEFT_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "medpeft-bench"


def check_available(card: DatasetCard, root: Path) -> None:
    """Fail before training, saying where to get the data and what layout is expected."""
    if card.format == "demo":
        return
    if card.format == "medmnist-npz":
        path = root / (card.file or f"{card.name}.npz")
        if not path.is_file():
            raise UserError(
                f"dataset {card.name!r}: {path} not found. Expected layout: {card.layout}. "
                f"Get it from {card.source}; point --data-root (or $MEDPEFT_DATA) at its folder."
            )
        return
    raise UserError(f"dataset {card.name!r}: format {card.format!r} has no reader yet")


def stored_image_size(card: DatasetCard, root: Path) -> int | None:
    """The side of the stored training images, read from file headers without loading the data
    (None when the format cannot tell); resolution rules such as FPT+'s depend on it."""
    if card.format == "demo":
        from bench.demo import IMG_SIZE

        return IMG_SIZE
    if card.format == "medmnist-npz":
        import zipfile

        try:
            path = root / (card.file or f"{card.name}.npz")
            with zipfile.ZipFile(path) as zf, zf.open("train_images.npy") as f:
                fmt = np.lib.format
                major, _ = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                shape, _, _ = read(f)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return card.extra.get("image_size")
        return int(shape[2] if len(shape) == 4 and shape[-1] in (1, 3) else shape[-1])
    return card.extra.get("image_size")


def load_dataset(card: DatasetCard, root: Path) -> LoadedDataset:
    """Read every split into memory as uint8 tensors."""
    import torch

    check_available(card, root)
    if card.format == "demo":
        from bench.demo import make_demo

        arrays = make_demo()
    else:
        arrays = _read_medmnist_npz(root / (card.file or f"{card.name}.npz"), card)
    splits, digest = {}, hashlib.sha256()
    for name in SPLITS:
        images, labels = arrays[name]
        images = np.ascontiguousarray(images)
        labels = np.asarray(labels).reshape(len(labels), -1).squeeze(1).astype(np.int64)
        if images.ndim == 3:
            images = images[:, None]  # grayscale N,H,W -> N,1,H,W
        elif images.ndim == 4 and images.shape[-1] in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        if len(images) != len(labels) or len(images) == 0:
            raise UserError(
                f"dataset {card.name!r}: split {name} has {len(images)} images and {len(labels)} labels"
            )
        if labels.min() < 0 or labels.max() >= len(card.classes):
            raise UserError(
                f"dataset {card.name!r}: split {name} has labels outside 0..{len(card.classes) - 1}"
            )
        digest.update(images.tobytes())
        digest.update(labels.tobytes())
        splits[name] = Split(
            torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
        )
    return LoadedDataset(card=card, splits=splits, fingerprint=digest.hexdigest()[:16])


def _read_medmnist_npz(path: Path, card: DatasetCard) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in SPLITS}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"dataset {card.name!r}: cannot read {path}: {exc}. Expected: {card.layout}"
        ) from None
