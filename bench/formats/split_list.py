"""The `split-list` format: MedFMC / mmcls annotation files, one "<file name> <label>" line per
image, the images in one folder; MedFMC's published few-shot files are read the same way."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.cards import DatasetCard
from bench.errors import UserError
from bench.formats.base import SPLITS, Format, ProgressFn, SplitArrays, missing, register
from bench.formats.images import assemble, check_args, decode_all, inside_root, safe_relpath
from bench.formats.labels import MULTIHOT, check_train_classes, class_index


@register
class SplitList(Format):
    name = "split-list"
    reader_keys = ("images", "files", "shot_files")

    def check_files(self, card: DatasetCard, folder: Path) -> None:
        images = folder / card.reader.get("images", "images")
        if not images.is_dir():
            raise missing(card, images)
        for split, name in card.reader.get("files", {}).items():
            if not (folder / name).is_file():
                raise missing(card, folder / name, f" ({split} annotation file)")

    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        return read_card_lists(card, root, card.reader.get("files", {}), on_progress)


def read_card_lists(
    card: DatasetCard,
    root: Path,
    files: Mapping[str, str],
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """The splits the annotation `files` ({split: file name}) list, read as the card says: its
    splits, or its published few-shot files."""
    return read_split_lists(
        card.folder(root),
        files,
        card.classes,
        size=card.image_size or 0,
        images=card.reader.get("images", "images"),
        multilabel=card.multilabel,
        bit_depth=card.bit_depth,
        on_progress=on_progress,
    )


def read_split_lists(
    root: Path,
    files: Mapping[str, str],
    classes: Sequence[str],
    *,
    size: int,
    images: str = "images",
    multilabel: bool,
    bit_depth: int | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read MedFMC / mmcls annotation files: `files[split]` is a text file (relative to `root`)
    with one "<file name> <label>" line per image, the image being `root/<images>/<file name>`.

    Single-label: the label is a class index or a class name (without spaces). Multi-label: a
    0/1 vector written "0,1,0" (one token) or "0 1 0" (one token per class). File names may hold
    spaces (MedFMC Colon's do), so labels are split off from the right. Blank lines are skipped.
    `train` is required; each single-label class needs a training image. Order: file order.
    `bit_depth` is the depth 16-bit grey files fill (None: the data's; `bench.formats.images`).
    """
    root = Path(root)
    check_args(classes, size)
    unknown = [s for s in files if s not in SPLITS]
    if unknown:
        raise UserError(f"{root}: annotation split(s) {unknown} are not among {list(SPLITS)}")
    if "train" not in files:
        raise UserError(f"{root}: no 'train' annotation file; the training split is required")
    root_resolved = root.resolve()
    index = {name: i for i, name in enumerate(classes)}
    found: dict[str, list[tuple[np.ndarray | int, str]]] = {}
    for split in SPLITS:
        if split not in files:
            continue
        path = root / inside_root(
            root, root_resolved, files[split], f"split {split!r}", "annotation file"
        )
        if not path.is_file():
            raise UserError(
                f"split {split!r}: annotation file {path} not found; expected '<file name> "
                f"<label>' lines for images in {root / images}"
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read annotation file {path}: {exc}") from None
        items = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            at = f"annotation file {path} line {number}"
            name, label = _parse_list_line(line, classes, index, multilabel, at)
            value = posixpath.join(images, name) if images else name
            # containment first: a path leading out is refused before anything looks at it
            rel = inside_root(root, root_resolved, value, at)
            if not (root / rel).is_file():
                _arity_hint(name, classes, multilabel, at)
            items.append((label, safe_relpath(root, root_resolved, value, at)))
        if not items:
            raise UserError(
                f"split {split!r}: annotation file {path} has no entries; expected one "
                f"'<file name> <label>' line per image"
            )
        found[split] = items
    if not multilabel:
        train = [label for label, _ in found["train"]]
        check_train_classes(train, classes, f"annotation file {root / files['train']}")
    decoded = decode_all(root, found, size, None, on_progress)
    return assemble(
        decoded, None, multilabel=multilabel, num_classes=len(classes), bit_depth=bit_depth
    )


def _parse_list_line(
    line: str, classes: Sequence[str], index: dict[str, int], multilabel: bool, at: str
) -> tuple[str, np.ndarray | int]:
    """(file name, label) of one non-blank annotation line."""
    tokens = line.split()
    width = len(classes)
    expected = f"{width} 0/1 values" if multilabel else "one class label"
    if len(tokens) < 2:
        raise UserError(f"{at}: expected '<file name> <label>' with {expected}, found {line!r}")
    last = tokens[-1]
    if not multilabel:
        if "," in last:
            raise UserError(
                f"{at}: label {last!r} is a multi-hot vector, but this dataset is single-label; "
                f"expected one class index 0..{width - 1} or class name"
            )
        name, value = line.rsplit(None, 1)
        return name, class_index(value, index, at)
    if "," in last:
        values = last.split(",")
        name = line.rsplit(None, 1)[0]
    else:
        count = _trailing_numbers(tokens[1:])
        if count < width:
            raise UserError(
                f"{at}: found {count} label value(s) after the file name, expected {expected} "
                f"(one per class {list(classes)})"
            )
        # more numbers than classes: the extra ones belong to the file name only if that image
        # exists, which `_arity_hint` checks once the path is known
        name, *values = line.rsplit(None, width)
    if len(values) != width:
        raise UserError(
            f"{at}: found {len(values)} label values, expected {expected} "
            f"(one per class {list(classes)})"
        )
    bad = [v for v in values if v not in MULTIHOT]
    if bad:
        raise UserError(f"{at}: label value(s) {bad} are not 0 or 1")
    return name, np.array([MULTIHOT[v] for v in values], dtype=np.float32)


def _trailing_numbers(tokens: Sequence[str]) -> int:
    count = 0
    for token in reversed(tokens):
        try:
            float(token)
        except ValueError:
            break
        count += 1
    return count


def _arity_hint(name: str, classes: Sequence[str], multilabel: bool, at: str) -> None:
    """The image is missing: if its "file name" ends in numbers, the line most likely has more
    label values than the dataset has (e.g. a multi-hot line for a single-label card)."""
    tokens = name.split()
    extra = _trailing_numbers(tokens[1:])
    if extra:
        found = extra + (len(classes) if multilabel else 1)
        expected = f"{len(classes)} 0/1 values" if multilabel else "one class label"
        raise UserError(
            f"{at}: found {found} label values after the file name "
            f"{' '.join(tokens[: len(tokens) - extra])!r}, expected {expected}"
        )
