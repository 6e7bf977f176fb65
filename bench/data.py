"""The dataset catalog (`datasets/*.toml` cards), and loading a card's data into tensors.

A card names a format; `bench.readers` turns the files of that format into uint8 arrays, and this
module applies the protocol every method shares: a validation split carved from train when the
data has none (never from test), and the few-shot view of a split seed (`few_shot`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.metric_table import TASK_METRICS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("multiclass", "binary", "multilabel", "ordinal")
FORMATS = ("demo", "medmnist-npz", "imagefolder", "csv", "split-list")
SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)
# A card's largest image side: each image is held in memory at image_size x image_size (4096 px
# RGB is 48 MiB an image); a larger value is a typo, not a dataset this suite can train on.
MAX_IMAGE_SIZE = 4096
# A card's name starts its records' file names (`<name>-<method>-s<seed>-<hash>.json`), which
# the file system caps at 255 bytes.
MAX_CARD_NAME = 100
# The [reader] keys each format understands (passed to its bench.readers function).
READER_KEYS: dict[str, tuple[str, ...]] = {
    "demo": (),
    "medmnist-npz": (),
    "imagefolder": (),
    "csv": (
        "manifest", "splits", "image_column", "label_column", "split_column", "onehot",
        "image_dir", "image_suffix", "ignore_columns",
    ),
    "split-list": ("images", "files", "shot_files"),
}  # fmt: skip
# The TOML type of each [reader] key; the tables' entries are checked by `_check_reader`.
_READER_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("manifest", "image_column", "label_column", "split_column", "image_dir",
                     "image_suffix", "images"), (str,)),
    "onehot": (bool,),
    "ignore_columns": (list,),
    **dict.fromkeys(("splits", "files", "shot_files"), (dict,)),
}  # fmt: skip
# The keys of a per-split CSV table, [reader.splits.<split>], and of a [medmnist] table.
_CSV_SPLIT_TYPES: dict[str, tuple[type, ...]] = {"manifest": (str,), "images": (str,)}
_MEDMNIST_TYPES: dict[str, tuple[type, ...]] = {
    "flag": (str,), "sizes": (list,), "n_channels": (int,), "n_samples": (dict,),
}  # fmt: skip
# The carved validation split is a property of the dataset, not of a run: one fixed seed.
VAL_SEED = 0
DEMO_NOTICE = "DEMO: synthetic images and a suite-pretrained backbone; not a medical result"

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class DatasetCard:
    """One catalog entry: what the data is, how it is laid out, and how it is scored."""

    name: str
    title: str
    task: str
    format: str
    primary_metric: str
    classes: tuple[str, ...]
    description: str = ""
    modality: str = ""
    layout: str = ""
    source: str = ""
    license: str = ""
    citation: str = ""
    notes: str = ""
    synthetic: bool = False
    epochs: int = 20
    file: str | None = None
    image_size: int | None = None
    subdir: str | None = None
    val_fraction: float = 0.1
    reference_lr: float | None = None
    reader: dict[str, Any] = field(default_factory=dict)
    medmnist: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def folder(self, root: Path) -> Path:
        """Where this dataset's files live under the data root."""
        return root / (self.name if self.subdir is None else self.subdir)


@dataclass
class Split:
    """Images uint8 [N, C, H, W] (C is 1 or 3); labels int64 [N], or float32 multi-hot [N, L]
    for multi-label tasks; `paths` names each image's file where the format has files."""

    images: Any  # torch.Tensor; typed loosely so importing this module does not import torch
    labels: Any
    paths: list[str] | None = None

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
        return Split(self.images[idx], self.labels[idx], paths)


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


# ------------------------------------------------------------------------------------ catalog


def catalog_dirs() -> list[Path]:
    """The built-in cards (`datasets/` beside the package in a checkout, `bench/_catalog` in a
    wheel), then every folder in $MEDPEFT_CARDS (os.pathsep-separated): users add datasets there
    without touching the installed suite."""
    here = Path(__file__).resolve().parent
    dirs = [c for c in (here.parent / "datasets", here / "_catalog") if c.is_dir()][:1]
    if not dirs:
        raise FileNotFoundError("dataset catalog not found (expected datasets/ beside bench/)")
    extra = os.environ.get("MEDPEFT_CARDS", "")
    dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return dirs


def parse_card(path: Path) -> DatasetCard:
    """Read and check one card file; every mistake is reported with the file's path."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"dataset card {path}: {exc}") from None
    missing = [k for k in ("name", "title", "task", "format", "primary_metric") if k not in raw]
    if missing:
        raise UserError(f"dataset card {path}: missing key(s) {missing}")
    where = f"dataset card {path}"
    _check_known(where, "", raw, list(_CARD_TYPES))
    _check_types(where, "", raw, _CARD_TYPES)
    _check_known(where, "[medmnist] ", raw.get("medmnist", {}), list(_MEDMNIST_TYPES))
    _check_types(where, "[medmnist] ", raw.get("medmnist", {}), _MEDMNIST_TYPES)
    _check_values(path, raw)
    fields = dict(raw, classes=tuple(str(c) for c in raw.get("classes", ())))
    card = DatasetCard(**fields, path=path)
    if card.name == "demo":
        from bench.demo import DEMO_CLASSES

        card = dataclasses.replace(card, classes=tuple(DEMO_CLASSES))
    _check_card(card)
    return card


# The TOML type each card key must have (int where a float is expected is fine); the card's keys.
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "title", "task", "format", "primary_metric", "description",
                     "modality", "layout", "source", "license", "citation", "notes", "file",
                     "subdir"), (str,)),
    "classes": (list,),
    "synthetic": (bool,),
    "epochs": (int,),
    "image_size": (int,),
    "val_fraction": (float, int),
    "reference_lr": (float, int),
    "reader": (dict,),
    "medmnist": (dict,),
}  # fmt: skip


_TYPE_WORDS = {(str,): "a string", (list,): "a list", (bool,): "true or false",
               (int,): "a whole number", (float, int): "a number", (dict,): "a table"}  # fmt: skip


def _check_known(
    where: str, table: str, values: dict[str, Any], valid: Sequence[str], owner: str = ""
) -> None:
    """Refuse a key the suite does not read (a misspelt one would silently leave its default),
    naming the closest valid key."""
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
            if not valid:
                hint = "remove it (no keys are read here)"
            raise UserError(f"{where}: {table}unknown key {key!r}{owner}; {hint}")


def _check_types(
    where: str, table: str, values: dict[str, Any], types: Mapping[str, tuple[type, ...]]
) -> None:
    """Each key's TOML type, before any value is used: a wrong one is named with the file."""
    for key, value in values.items():
        wanted = types.get(key)
        # bool is an int in Python; only a true-or-false key may be one
        wrong = wanted is not None and (
            not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
        )
        if wrong:
            kind = _TYPE_WORDS[wanted]
            raise UserError(f"{where}: {table}{key} must be {kind}, got {value!r}")


def _check_values(path: Path, raw: dict[str, Any]) -> None:
    """The values of the card keys that hold names and sizes (their types already checked)."""
    for c in raw.get("classes", []):
        if not isinstance(c, (str, int)) or isinstance(c, bool):
            raise UserError(f"dataset card {path}: classes must be a list of names, got {c!r}")
    if raw.get("epochs", 1) < 1 or (raw.get("image_size") or 8) < 8:
        raise UserError(f"dataset card {path}: epochs must be >= 1 and image_size >= 8")
    if (raw.get("image_size") or 0) > MAX_IMAGE_SIZE:
        raise UserError(
            f"dataset card {path}: image_size must be at most {MAX_IMAGE_SIZE}, got "
            f"{raw['image_size']}; it is the side every image is resized to and held in memory "
            "at (the papers read at 224 or 512)"
        )
    sizes = raw.get("medmnist", {}).get("sizes", [])
    if isinstance(sizes, list) and not all(s in MEDMNIST_SIZES for s in sizes):
        raise UserError(
            f"dataset card {path}: [medmnist] sizes must be a list drawn from "
            f"{list(MEDMNIST_SIZES)}, got {sizes!r}"
        )


def _check_shot_template(where: str, split: str, template: Any) -> None:
    """A published shot file name: text with only {shots} and {exp} placeholders (str.format
    would otherwise reach attributes of its arguments)."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except (ValueError, TypeError, AttributeError):
        fields = None
    if not isinstance(template, str) or fields is None or not set(fields) <= {"shots", "exp"}:
        raise UserError(
            f"{where}: [reader.shot_files] {split} = {template!r}: use plain text with only the "
            "placeholders {shots} and {exp}, e.g. 'chest_{shots}-shot_train_exp{exp}.txt'"
        )


def _check_card(card: DatasetCard) -> None:
    where = f"dataset card {card.path}"
    if card.path is not None and card.name != card.path.stem:
        raise UserError(f"{where}: name {card.name!r} must equal the file name {card.path.stem!r}")
    if len(card.name) > MAX_CARD_NAME:
        raise UserError(
            f"{where}: name is {len(card.name)} characters; at most {MAX_CARD_NAME} (it starts "
            "every record's file name, which the file system limits): rename the card"
        )
    if card.task not in TASKS:
        raise UserError(f"{where}: task {card.task!r} is not one of {', '.join(TASKS)}")
    if card.format not in FORMATS:
        raise UserError(f"{where}: format {card.format!r} is not one of {', '.join(FORMATS)}")
    if card.primary_metric not in TASK_METRICS[card.task]:
        raise UserError(
            f"{where}: primary_metric {card.primary_metric!r} is not reported for task "
            f"{card.task!r}; choose one of {', '.join(TASK_METRICS[card.task])}"
        )
    if not card.classes:
        raise UserError(f"{where}: classes is empty")
    if len(set(card.classes)) != len(card.classes):
        raise UserError(f"{where}: classes repeat a name")
    if card.task == "binary" and len(card.classes) != 2:
        raise UserError(f"{where}: a binary task has exactly 2 classes, got {len(card.classes)}")
    if not 0 < card.val_fraction < 1:
        raise UserError(f"{where}: val_fraction must lie in (0, 1), got {card.val_fraction}")
    if card.format in ("imagefolder", "csv", "split-list") and not card.image_size:
        raise UserError(f"{where}: format {card.format} needs image_size (the side to read at)")
    _check_reader(where, card.format, card.reader)


def _check_reader(where: str, fmt: str, reader: dict[str, Any]) -> None:
    """The [reader] table: only keys the format reads, each of its type, tables keyed by split."""
    # shot-file templates first, whatever the format: str.format must never see a hostile one
    _check_types(where, "[reader] ", {"shot_files": reader.get("shot_files", {})}, _READER_TYPES)
    for split, template in reader.get("shot_files", {}).items():
        _check_shot_template(where, split, template)
    _check_known(where, "[reader] ", reader, READER_KEYS[fmt], f" for format {fmt}")
    _check_types(where, "[reader] ", reader, _READER_TYPES)
    if not all(isinstance(c, str) for c in reader.get("ignore_columns", [])):
        raise UserError(f"{where}: [reader] ignore_columns must be a list of column names")
    for key in ("splits", "files", "shot_files"):
        table = f"[reader.{key}]"
        _check_known(where, f"{table} ", reader.get(key, {}), SPLITS)
        for split, value in reader.get(key, {}).items():
            if key != "splits":
                _check_types(where, f"{table} ", {split: value}, {split: (str,)})
            elif isinstance(value, dict) and isinstance(value.get("manifest"), str):
                _check_known(where, f"[reader.splits.{split}] ", value, list(_CSV_SPLIT_TYPES))
                _check_types(where, f"[reader.splits.{split}] ", value, _CSV_SPLIT_TYPES)
            else:
                raise UserError(
                    f"{where}: {table} {split} must be a table with manifest = '<labels.csv>' "
                    f"(and optionally images = '<image folder>'), got {value!r}"
                )
    if fmt == "csv" and ("manifest" in reader) == bool(reader.get("splits")):
        raise UserError(f"{where}: [reader] needs either manifest or [reader.splits.<split>]")


@cache
def _load_catalog(dirs: tuple[Path, ...]) -> dict[str, DatasetCard]:
    cards: dict[str, DatasetCard] = {}
    for folder in dirs:
        if not folder.is_dir():
            raise UserError(f"$MEDPEFT_CARDS names {folder}, which is not a folder")
        for path in sorted(folder.glob("*.toml")):
            card = parse_card(path)
            if card.name in cards:
                raise UserError(
                    f"dataset {card.name!r} is defined twice: {cards[card.name].path} and {path}"
                )
            cards[card.name] = card
    return cards


def load_catalog() -> dict[str, DatasetCard]:
    return _load_catalog(tuple(catalog_dirs()))


_SIZED = re.compile(r"^(?P<base>.+)_(?P<size>\d{1,4})$")


def get_card(name: str) -> DatasetCard:
    """A catalog card; MedMNIST+ sizes are named like the files (`pathmnist_224`)."""
    cards = load_catalog()
    if name in cards:
        return cards[name]
    m = _SIZED.match(name)
    if m and m["base"] in cards and cards[m["base"]].format == "medmnist-npz":
        base, size = cards[m["base"]], int(m["size"])
        sizes = tuple(base.medmnist.get("sizes", MEDMNIST_SIZES))
        if size not in sizes:
            raise UserError(
                f"dataset {name!r}: MedMNIST ships {base.name} at sizes {list(sizes)}; "
                f"use {base.name} (28 px) or {base.name}_<size>"
            )
        if size == 28:
            return base
        flag = base.medmnist.get("flag", base.name)
        return dataclasses.replace(base, name=name, file=f"{flag}_{size}.npz", image_size=size)
    raise UserError(f"unknown dataset {name!r}; available: {', '.join(cards)}")


def data_root(override: str | Path | None = None) -> Path:
    """--data-root, else $MEDPEFT_DATA, else the user's data directory."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("MEDPEFT_DATA"):
        return Path(os.environ["MEDPEFT_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "medpeft-bench"


# ------------------------------------------------------------------------- where the files are


def npz_path(card: DatasetCard, root: Path) -> Path:
    return card.folder(root) / (card.file or f"{card.name}.npz")


def _missing(card: DatasetCard, what: Path, extra: str = "") -> UserError:
    hint = ""
    if card.format == "medmnist-npz":
        hint = f" `bench data download {card.name}` fetches it through the medmnist package."
    return UserError(
        f"dataset {card.name!r}: {what} not found.{extra} Expected layout: {card.layout} "
        f"Get it from {card.source}; point --data-root (or $MEDPEFT_DATA) at the folder that "
        f"holds it.{hint}"
    )


def _csv_splits(card: DatasetCard) -> dict[str, tuple[str, str]] | None:
    """Per-split (manifest, image folder) of a csv card, or None for one manifest."""
    splits = card.reader.get("splits")
    if not splits:
        return None
    return {s: (v["manifest"], v.get("images", "")) for s, v in splits.items()}


def _csv_manifest(card: DatasetCard, folder: Path) -> Path:
    """The path of a csv card's one manifest, after checking it stays inside the dataset folder
    (as the per-split manifests and every image path do)."""
    from bench.readers import inside_root

    value, where = card.reader["manifest"], f"dataset card {card.path}"
    return folder / inside_root(folder, folder.resolve(), value, where, "[reader] manifest")


def check_available(card: DatasetCard, root: Path) -> None:
    """Fail fast, before anything is read, when a file the card names is absent, saying where to
    get the data and what layout is expected. `load_dataset` checks the contents."""
    folder = card.folder(root)
    if card.format == "demo":
        return
    if card.format == "medmnist-npz":
        if not npz_path(card, root).is_file():
            raise _missing(card, npz_path(card, root))
        return
    if not folder.is_dir():
        raise _missing(card, folder)
    if card.format == "imagefolder":
        if not (folder / "train").is_dir():
            raise _missing(card, folder / "train", " The training split is required.")
        if not (folder / "test").is_dir():
            raise _missing(card, folder / "test", " The test split is required.")
    elif card.format == "csv":
        per_split = _csv_splits(card)
        if per_split is None:
            if not _csv_manifest(card, folder).is_file():
                raise _missing(card, _csv_manifest(card, folder))
        else:
            for split, (manifest, images) in per_split.items():
                if not (folder / manifest).is_file():
                    raise _missing(card, folder / manifest, f" ({split} labels)")
                if images and not (folder / images).is_dir():
                    raise _missing(card, folder / images, f" ({split} images)")
    elif card.format == "split-list":
        images = folder / card.reader.get("images", "images")
        if not images.is_dir():
            raise _missing(card, images)
        for split, name in card.reader.get("files", {}).items():
            if not (folder / name).is_file():
                raise _missing(card, folder / name, f" ({split} annotation file)")


def stored_image_size(card: DatasetCard, root: Path) -> int | None:
    """The side of the training images as loaded, from file headers without reading the data
    (None when unknown); resolution rules such as FPT+'s depend on it."""
    if card.format == "demo":
        from bench.demo import IMG_SIZE

        return IMG_SIZE
    if card.format == "medmnist-npz":
        from bench.medmnist import npz_image_size

        try:
            size = npz_image_size(npz_path(card, root))
        except (OSError, UserError, ValueError, KeyError):
            size = None
        return size or card.image_size
    return card.image_size  # the readers resize every image to the card's size


# --------------------------------------------------------------------------------- loading


def read_arrays(card: DatasetCard, root: Path, on_progress: ProgressFn | None = None) -> dict:
    """{split: bench.readers.SplitArrays} for the splits the files provide."""
    from bench import readers

    check_available(card, root)
    folder = card.folder(root)
    size = card.image_size or 0
    classes, multilabel = card.classes, card.multilabel
    if card.format == "demo":
        from bench.demo import make_demo

        return {
            s: readers.SplitArrays(images, labels, [f"{s}[{i}]" for i in range(len(labels))])
            for s, (images, labels) in make_demo().items()
        }
    if card.format == "medmnist-npz":
        from bench.medmnist import read_medmnist_npz

        return read_medmnist_npz(
            npz_path(card, root), num_classes=len(classes), multilabel=multilabel
        )
    if card.format == "imagefolder":
        return readers.read_imagefolder(folder, classes, size=size, on_progress=on_progress)
    opts = dict(card.reader)
    if card.format == "csv":
        per_split = _csv_splits(card)
        opts.pop("splits", None)
        opts.pop("manifest", None)
        common = dict(size=size, multilabel=multilabel, on_progress=on_progress, **opts)
        if per_split is not None:
            return readers.read_csv_splits(folder, per_split, classes, **common)
        return readers.read_csv_manifest(folder, _csv_manifest(card, folder), classes, **common)
    if card.format == "split-list":
        return readers.read_split_lists(
            folder,
            card.reader.get("files", {}),
            classes,
            size=size,
            images=card.reader.get("images", "images"),
            multilabel=multilabel,
            on_progress=on_progress,
        )
    raise UserError(f"dataset {card.name!r}: format {card.format!r} has no reader")


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
    from bench import decoded_cache as cache

    entry = cache.lookup(card, root, decoded_cache)
    data = cache.read(entry, functools.partial(_to_dataset, card)) if entry else None
    if data is None:
        data = _to_dataset(card, *_read_splits(card, root, on_progress))
        if entry:
            cache.write(entry, data)
    return data


def _read_splits(
    card: DatasetCard, root: Path, on_progress: ProgressFn | None
) -> tuple[dict, dict[str, Any]]:
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
        from bench.splits import carve_val

        train = arrays["train"]
        keep, val = carve_val(train.labels, card.val_fraction, VAL_SEED, task=card.task)
        arrays["val"] = _take(train, val)
        arrays["train"] = _take(train, keep)
        protocol["val"] = {
            "carved_from": "train",
            "fraction": card.val_fraction,
            "seed": VAL_SEED,
            "size": len(val),
        }
    return {s: arrays[s] for s in SPLITS}, protocol


def _check_train_classes(card: DatasetCard, root: Path, labels: np.ndarray) -> None:
    """Every class of a single-label card has a training image, whatever the format (the image
    readers check this before decoding; an array file is only known once read)."""
    from bench.readers import check_train_classes

    if card.multilabel:
        return  # a label never positive in train is a `bench data check` warning
    where, hint = f"dataset {card.name!r}", "add training images of it or fix the card's classes"
    if card.format == "medmnist-npz":
        where = str(npz_path(card, root))
        hint = "train_labels never holds their index; re-download it or fix the card's classes"
    check_train_classes(labels, card.classes, where, hint)


def _take(arrays, index: np.ndarray):
    from bench.readers import SplitArrays

    return SplitArrays(arrays.images[index], arrays.labels[index], [arrays.paths[i] for i in index])


def _to_dataset(card: DatasetCard, arrays: dict, protocol: dict[str, Any]) -> LoadedDataset:
    digest = hashlib.sha256()
    splits = {name: _to_split(card, name, part, digest) for name, part in arrays.items()}
    return LoadedDataset(
        card=card, splits=splits, fingerprint=digest.hexdigest()[:16], protocol=protocol
    )


def _to_split(card: DatasetCard, name: str, part, digest) -> Split:
    """One reader split as tensors, checked against the card; its bytes go into `digest`."""
    import torch

    images, labels = _check_split(card, name, part.images, part.labels)
    digest.update(name.encode())
    digest.update(images)  # the buffer itself: tobytes() would copy a (memory-mapped) split
    digest.update(labels.tobytes())
    return Split(torch.from_numpy(images), torch.from_numpy(labels), part.paths)


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
    otherwise K images per class are sampled from train (`bench.splits.sample_shots`). Val and
    test are the dataset's own. The sampled indices or file names go into the record.
    """
    card = data.card
    files = card.reader.get("shot_files")
    if files:
        from bench.readers import read_split_lists

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
        read = read_split_lists(
            folder,
            named,
            card.classes,
            size=card.image_size or 0,
            images=card.reader.get("images", "images"),
            multilabel=card.multilabel,
        )
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
    from bench.splits import sample_shots, split_summary

    train = data.splits["train"]
    labels = train.labels.numpy()
    index = sample_shots(labels, shots, split_seed, task=card.task, classes=card.classes)
    protocol = {
        **data.protocol,
        "shots": shots,
        "split_seed": split_seed,
        "shots_from": "sampled",
        "train_indices": index.tolist(),  # into the full training split, in file order
        "train_counts": split_summary(labels, index, task=card.task, classes=card.classes),
    }
    splits = {**data.splits, "train": train.subset(index)}
    digest = hashlib.sha256(f"{data.fingerprint}:{shots}:{split_seed}:".encode())
    digest.update(index.tobytes())
    return LoadedDataset(card, splits, digest.hexdigest()[:16], protocol)
