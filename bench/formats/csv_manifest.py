"""The `csv` format: images listed in CSV manifests, one with a split column or one per split
(ISIC 2018 style); labels as class names or indices, one-hot or multi-hot columns; optionally a
patient/study group per image (`group_column`, default a column named "group"), which keeps a
patient's images together when val is carved and in few-shot samples (`bench.group_splits`)."""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.cards import DatasetCard
from bench.errors import UserError
from bench.formats.base import SPLITS, Format, ProgressFn, SplitArrays, missing, register
from bench.formats.group_column import find_group_column, group_of
from bench.formats.images import assemble, check_args, decode_all, inside_root, safe_relpath
from bench.formats.labels import check_train_classes, class_index, multihot


@register
class CsvManifest(Format):
    name = "csv"
    reader_keys = (
        "manifest", "splits", "image_column", "label_column", "split_column", "onehot",
        "image_dir", "image_suffix", "ignore_columns", "group_column",
    )  # fmt: skip

    def check_files(self, card: DatasetCard, folder: Path) -> None:
        per_split = _per_split(card)
        if per_split is None:
            if not _manifest(card, folder).is_file():
                raise missing(card, _manifest(card, folder))
            return
        for split, (manifest, images) in per_split.items():
            if not (folder / manifest).is_file():
                raise missing(card, folder / manifest, f" ({split} labels)")
            if images and not (folder / images).is_dir():
                raise missing(card, folder / images, f" ({split} images)")

    def check_reader(self, where: str, reader: dict) -> None:
        if ("manifest" in reader) == bool(reader.get("splits")):
            raise UserError(f"{where}: [reader] needs either manifest or [reader.splits.<split>]")

    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        folder = card.folder(root)
        per_split = _per_split(card)
        opts = dict(card.reader)
        opts.pop("splits", None)
        opts.pop("manifest", None)
        common = dict(
            size=card.image_size or 0,
            multilabel=card.multilabel,
            bit_depth=card.bit_depth,
            on_progress=on_progress,
            **opts,
        )
        if per_split is not None:
            return read_csv_splits(folder, per_split, card.classes, **common)
        return read_csv_manifest(folder, _manifest(card, folder), card.classes, **common)


def _per_split(card: DatasetCard) -> dict[str, tuple[str, str]] | None:
    """Per-split (manifest, image folder) of a csv card, or None for one manifest."""
    splits = card.reader.get("splits")
    if not splits:
        return None
    return {s: (v["manifest"], v.get("images", "")) for s, v in splits.items()}


def _manifest(card: DatasetCard, folder: Path) -> Path:
    """The path of a csv card's one manifest, after checking it stays inside the dataset folder
    (as the per-split manifests and every image path do)."""
    value, where = card.reader["manifest"], f"dataset card {card.path}"
    return folder / inside_root(folder, folder.resolve(), value, where, "[reader] manifest")


def read_csv_manifest(
    root: Path,
    manifest: Path,
    classes: Sequence[str],
    *,
    size: int,
    image_column: str = "image",
    label_column: str | None = "label",
    split_column: str | None = "split",
    multilabel: bool = False,
    onehot: bool = False,
    image_dir: str = "",
    image_suffix: str = "",
    split: str | None = None,
    ignore_columns: Sequence[str] = (),
    group_column: str | None = None,
    bit_depth: int | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read the images a CSV manifest lists (paths relative to `root`), in manifest order.

    Single-label: `label_column` holds a class name or an integer index, or (`onehot`) one 0/1
    column per class name holds exactly one 1 per row. Multi-label (MedFMC style): one 0/1
    column per class name, `label_column` ignored. In both column-per-class forms every column
    other than the image/split/label columns and `ignore_columns` must be a class (an extra
    column would be a silently dropped class). The image path is `image_dir/<value><image_suffix>`.
    `split_column` values are train/val/test; without it every row is train; `split` puts every
    row in that split (the split column is then not read). Paths that resolve outside `root`
    (.., absolute, escaping symlinks) are refused. `bit_depth` is the depth 16-bit grey files
    fill (None: the data's; `bench.formats.images`). `group_column` names each image's patient or
    study (None: a column "group" when there is one and it is no class; else no groups).
    """
    root, manifest = Path(root), Path(manifest)
    check_args(classes, size)
    found, groups = _collect_csv(
        root,
        manifest,
        classes,
        image_column=image_column,
        label_column=label_column,
        split_column=split_column,
        multilabel=multilabel,
        onehot=onehot,
        image_dir=image_dir,
        image_suffix=image_suffix,
        split=split,
        ignore_columns=ignore_columns,
        group_column=group_column,
    )
    if split is None or "train" in found:
        # with `split` given the manifest holds one split, and only a train one must cover classes
        if "train" not in found:
            raise UserError(
                f"manifest {manifest}: no row has split 'train'; the training split is required"
            )
        if not multilabel:
            train = [label for label, _ in found["train"]]
            check_train_classes(train, classes, f"manifest {manifest}")
    decoded = decode_all(root, found, size, None, on_progress, groups)
    return assemble(
        decoded,
        None,
        multilabel=multilabel,
        num_classes=len(classes),
        bit_depth=bit_depth,
        groups=groups,
    )


def read_csv_splits(
    root: Path,
    manifests: Mapping[str, tuple[str, str]],
    classes: Sequence[str],
    *,
    size: int,
    image_column: str = "image",
    label_column: str | None = "label",
    split_column: str | None = None,
    multilabel: bool = False,
    onehot: bool = False,
    image_suffix: str = "",
    ignore_columns: Sequence[str] = (),
    group_column: str | None = None,
    bit_depth: int | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read one CSV manifest per split (ISIC 2018 style): `manifests[split]` = (manifest path,
    folder of its images), both relative to `root`. Options as for `read_csv_manifest`
    (`split_column` is accepted and ignored: each manifest is one split). `train` is required;
    the channel count is decided once for all splits (1 only when every image is grey).
    """
    root = Path(root)
    check_args(classes, size)
    unknown = [s for s in manifests if s not in SPLITS]
    if unknown:
        raise UserError(f"{root}: manifest split(s) {unknown} are not among {list(SPLITS)}")
    if "train" not in manifests:
        raise UserError(f"{root}: no 'train' manifest; the training split is required")
    found: dict[str, list[tuple[np.ndarray | int, str]]] = {}
    groups: dict[str, list[str]] = {}
    for split_name in SPLITS:
        if split_name not in manifests:
            continue
        rel_manifest, images = manifests[split_name]
        manifest = root / inside_root(
            root, root.resolve(), rel_manifest, f"split {split_name!r}", "manifest"
        )
        if not manifest.is_file():
            raise UserError(
                f"split {split_name!r}: manifest {manifest} not found (its images are expected "
                f"in {root / images})"
            )
        part, part_groups = _collect_csv(
            root,
            manifest,
            classes,
            image_column=image_column,
            label_column=label_column,
            split_column=None,
            multilabel=multilabel,
            onehot=onehot,
            image_dir=images,
            image_suffix=image_suffix,
            split=split_name,
            ignore_columns=ignore_columns,
            group_column=group_column,
        )
        found.update(part)
        groups.update(part_groups)
    if not multilabel:
        train = [label for label, _ in found["train"]]
        check_train_classes(train, classes, f"manifest {root / manifests['train'][0]}")
    decoded = decode_all(root, found, size, None, on_progress, groups)
    return assemble(
        decoded,
        None,
        multilabel=multilabel,
        num_classes=len(classes),
        bit_depth=bit_depth,
        groups=groups,
    )


def _collect_csv(
    root: Path,
    manifest: Path,
    classes: Sequence[str],
    *,
    image_column: str,
    label_column: str | None,
    split_column: str | None,
    multilabel: bool,
    onehot: bool,
    image_dir: str,
    image_suffix: str,
    split: str | None,
    ignore_columns: Sequence[str],
    group_column: str | None = None,
) -> tuple[dict[str, list[tuple[np.ndarray | int, str]]], dict[str, list[str]]]:
    """({split: [(label, image path relative to root)]}, {split: [group]}) in manifest order,
    every row checked; the groups are empty when the manifest has no group column."""
    if multilabel and onehot:
        raise ValueError("onehot is a single-label encoding; it cannot be combined with multilabel")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    header, rows = _read_csv(manifest)
    where = f"manifest {manifest}"
    per_class = multilabel or onehot
    group_column = find_group_column(header, group_column, classes, ignore_columns, where)
    # the split column (if any) is never a class column, even when `split` makes it unread
    meta = {image_column, split_column, label_column, group_column, *ignore_columns}
    split_column = None if split is not None else split_column
    required = [image_column]
    if split_column is not None:
        required.append(split_column)
    if not per_class:
        if label_column is None:
            raise ValueError("a single-label manifest needs label_column (or onehot=True)")
        required.append(label_column)
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; columns present: {header}")
    if per_class:
        ignored = [c for c in ignore_columns if c in classes]
        if ignored:
            raise UserError(f"{where}: ignore_columns {ignored} are classes of this dataset")
        absent = [c for c in classes if c not in header]
        extra = [c for c in header if c not in meta and c not in classes]
        if absent or extra:
            kind = "multi-label" if multilabel else "one-hot"
            raise UserError(
                f"{where}: {kind} columns do not match the dataset's classes: "
                f"missing {absent}, unexpected {extra}; expected one 0/1 column per class "
                f"{list(classes)} (list other columns in the card's ignore_columns)"
            )
    index = {name: i for i, name in enumerate(classes)}
    root_resolved = root.resolve()
    found: dict[str, list[tuple[np.ndarray | int, str]]] = {}
    groups: dict[str, list[str]] = {}
    for line, row in rows:
        at = f"{where} line {line}"
        if split is not None:
            row_split = split
        elif split_column is not None:
            row_split = row[split_column].strip().lower()
        else:
            row_split = "train"
        if row_split not in SPLITS:
            raise UserError(f"{at}: split {row[split_column]!r} is not one of {list(SPLITS)}")
        label: np.ndarray | int
        if multilabel:
            label = multihot(row, classes, at)
        elif onehot:
            label = _onehot(row, classes, at)
        else:
            label = class_index(row[label_column].strip(), index, at)  # type: ignore[index]
        value = row[image_column].strip()
        if not value:
            raise UserError(f"{at}: empty image path")
        value += image_suffix
        if image_dir:
            # an absolute value stays absolute here and is refused by safe_relpath
            value = posixpath.join(Path(image_dir).as_posix(), value)
        rel = safe_relpath(root, root_resolved, value, at)
        found.setdefault(row_split, []).append((label, rel))
        if group_column is not None:
            groups.setdefault(row_split, []).append(group_of(row, group_column, at))
    return found, groups


def _read_csv(manifest: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; ragged rows are refused rather than padded."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    # DictReader pads short rows with None and gathers surplus fields under None
                    fields = sum(v is not None for k, v in row.items() if k is not None)
                    fields += len(row.get(None) or [])  # type: ignore[call-overload]
                    raise UserError(
                        f"manifest {manifest} line {reader.line_num}: {fields} fields where the "
                        f"header has {len(header)}; every row needs one value per column"
                    )
                rows.append((reader.line_num, row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read manifest {manifest}: {exc}") from None
    if not header or not rows:
        raise UserError(
            f"manifest {manifest} is empty; expected a header row and one row per image"
        )
    return header, rows


def _onehot(row: dict[str, str], classes: Sequence[str], at: str) -> int:
    hot = multihot(row, classes, at)
    names = [classes[i] for i in np.flatnonzero(hot)]
    if len(names) != 1:
        raise UserError(
            f"{at}: one-hot row has {len(names)} classes set {names}; exactly one of the columns "
            f"{list(classes)} must be 1"
        )
    return int(np.argmax(hot))
