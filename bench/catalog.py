"""The dataset catalog: the `datasets/*.toml` cards (and $MEDPEFT_CARDS), each parsed and
checked with its file named, and where the data lives (`data_root`)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import string
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from bench.cards import DatasetCard
from bench.demo import DEMO_CLASSES
from bench.errors import UserError
from bench.formats import SPLITS, Format, format_names, get_format
from bench.formats.images import BIT_DEPTHS
from bench.formats.medmnist import MEDMNIST_SIZES
from bench.metric_table import TASK_METRICS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("multiclass", "binary", "multilabel", "ordinal")
# A card's largest image side: each image is held in memory at image_size x image_size (4096 px
# RGB is 48 MiB an image); a larger value is a typo, not a dataset this suite can train on.
MAX_IMAGE_SIZE = 4096
# A card's name starts its records' file names (`<name>-<method>-s<seed>-<hash>.json`), which
# the file system caps at 255 bytes.
MAX_CARD_NAME = 100
# The TOML type of each [reader] key; the tables' entries are checked by `_check_reader`.
_READER_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("manifest", "image_column", "label_column", "split_column", "image_dir",
                     "image_suffix", "images", "group_column"), (str,)),
    "onehot": (bool,),
    "ignore_columns": (list,),
    **dict.fromkeys(("splits", "files", "shot_files"), (dict,)),
}  # fmt: skip
# The keys of a per-split CSV table, [reader.splits.<split>], and of a [medmnist] table.
_CSV_SPLIT_TYPES: dict[str, tuple[type, ...]] = {"manifest": (str,), "images": (str,)}
_MEDMNIST_TYPES: dict[str, tuple[type, ...]] = {
    "flag": (str,), "sizes": (list,), "n_channels": (int,), "n_samples": (dict,),
}  # fmt: skip


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
    "bit_depth": (int,),
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
    if raw.get("bit_depth", 8) not in BIT_DEPTHS:
        raise UserError(
            f"dataset card {path}: bit_depth must be one of {list(BIT_DEPTHS)}, got "
            f"{raw['bit_depth']}; it is how many bits 16-bit greyscale files' values fill"
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
    try:
        fmt = get_format(card.format)
    except KeyError:
        names = ", ".join(format_names())
        raise UserError(f"{where}: format {card.format!r} is not one of {names}") from None
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
    if card.bit_depth is not None and not fmt.decodes_files:
        raise UserError(f"{where}: bit_depth applies to image files; format {card.format} has none")
    if fmt.decodes_files and not card.image_size:
        raise UserError(f"{where}: format {card.format} needs image_size (the side to read at)")
    _check_reader(where, fmt, card.reader)


def _check_reader(where: str, fmt: Format, reader: dict[str, Any]) -> None:
    """The [reader] table: only keys the format reads, each of its type, tables keyed by split."""
    # shot-file templates first, whatever the format: str.format must never see a hostile one
    _check_types(where, "[reader] ", {"shot_files": reader.get("shot_files", {})}, _READER_TYPES)
    for split, template in reader.get("shot_files", {}).items():
        _check_shot_template(where, split, template)
    _check_known(where, "[reader] ", reader, fmt.reader_keys, f" for format {fmt.name}")
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
    fmt.check_reader(where, reader)


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
    if m and m["base"] in cards:
        base = cards[m["base"]]
        sized = get_format(base.format).sized(base, name, int(m["size"]))
        if sized is not None:
            return sized
    raise UserError(f"unknown dataset {name!r}; available: {', '.join(cards)}")


def data_root(override: str | Path | None = None) -> Path:
    """--data-root, else $MEDPEFT_DATA, else the user's data directory."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("MEDPEFT_DATA"):
        return Path(os.environ["MEDPEFT_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "medpeft-bench"
