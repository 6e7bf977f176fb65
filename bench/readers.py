"""Readers for image-folder and CSV-manifest datasets: decode, resize and stack into uint8 arrays.

Both readers return `{split: SplitArrays}` with images uint8 [N, H, W, C] (C = 1 or 3), the
same in-memory shape as the MedMNIST reader in `bench.data` before its channel transpose.
Images are resized to `size` x `size` with Pillow's bilinear filter (which antialiases when
shrinking); the aspect ratio is NOT kept, like the `Resize((s, s))` the papers use. EXIF
orientation is ignored (pixels are taken as stored), as torchvision's ImageFolder does.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.errors import UserError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Modes that are one grey channel; 16/32-bit ones are rescaled to 8 bits in `_decode`.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_MULTIHOT = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


@dataclass
class SplitArrays:
    """One split: uint8 images [N, H, W, C], labels int64 [N] or float32 multi-hot [N, L],
    and each image's path relative to the data root."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_imagefolder(
    root: Path,
    classes: Sequence[str],
    *,
    size: int,
    splits: Sequence[str] = SPLITS,
    grayscale: bool | None = None,
) -> dict[str, SplitArrays]:
    """Read `root/<split>/<class name>/**/<image>`; the label is the class's position in `classes`.

    A missing split folder is left out of the result (the caller may carve val from train), but
    `train` is required and every class needs at least one training image. Files are ordered by
    class index, then relative path. `grayscale=None` keeps one channel only when every image of
    the dataset is greyscale; True/False force 1/3 channels.
    """
    root = Path(root)
    _check_args(classes, size)
    if not root.is_dir():
        raise UserError(
            f"data folder {root} not found; expected {root}/<split>/<class name>/<images>"
        )
    index = {name: i for i, name in enumerate(classes)}
    found: dict[str, list[tuple[int, str]]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            if split == "train":
                raise UserError(
                    f"{root}: no 'train' folder; expected {root}/train/<class name>/<images> "
                    f"with class folders {list(classes)}"
                )
            continue
        found[split] = _scan_split(root, split, index)
    counts = np.bincount([label for label, _ in found["train"]], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(
            f"{root / 'train'}: no training image for class(es) {empty}; add images under "
            f"train/<class name>/ or fix the card's classes"
        )
    decoded = {
        split: [(_decode(root, rel, size, grayscale), label, rel) for label, rel in items]
        for split, items in found.items()
    }
    return _assemble(decoded, grayscale, multilabel=False, num_classes=len(classes))


def _scan_split(root: Path, split: str, index: dict[str, int]) -> list[tuple[int, str]]:
    """(class index, relative path) for every image file of one split folder, sorted."""
    split_dir = root / split
    items: list[tuple[int, str]] = []
    entries = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
    unexpected = [p.name for p in entries if p.is_dir() and p.name not in index]
    if unexpected:
        raise UserError(
            f"{split_dir}: folder(s) {unexpected} are not classes of this dataset; expected class "
            f"folders {list(index)}. Rename or remove them, or fix the card's classes."
        )
    loose = [p.name for p in entries if p.is_file() and _is_image(p.name)]
    if loose:
        raise UserError(
            f"{split_dir}: image(s) {loose[:5]} lie outside a class folder; move them into "
            f"{split}/<class name>/"
        )
    for class_dir in (p for p in entries if p.is_dir()):
        # followlinks=False: a symlink loop cannot hang the scan; a symlinked class folder still works
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or not _is_image(name):
                    continue  # ._foo.png (macOS), README, thumbnails db...
                rel = Path(dirpath, name).relative_to(root).as_posix()
                items.append((index[class_dir.name], rel))
    if not items:
        raise UserError(
            f"{split_dir}: no images; add images under {split}/<class name>/ or remove it"
        )
    return sorted(items)


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
) -> dict[str, SplitArrays]:
    """Read the images a CSV manifest lists (paths relative to `root`), in manifest order.

    Single-label: `label_column` holds a class name or an integer index. Multi-label (MedFMC
    style): one 0/1 column per class name, `label_column` ignored, and every column other than
    the image/split/label columns must be a class (an extra column would be a silently dropped
    class). `split_column` values are train/val/test; without it every row is train. Paths that
    resolve outside `root` (.., absolute, escaping symlinks) are refused.
    """
    root, manifest = Path(root), Path(manifest)
    _check_args(classes, size)
    header, rows = _read_csv(manifest)
    where = f"manifest {manifest}"
    required = [image_column]
    if split_column is not None:
        required.append(split_column)
    if not multilabel:
        if label_column is None:
            raise ValueError("a single-label manifest needs label_column")
        required.append(label_column)
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; columns present: {header}")
    if multilabel:
        meta = {image_column, split_column, label_column}
        label_cols = [c for c in header if c not in meta]
        absent = [c for c in classes if c not in header]
        extra = [c for c in label_cols if c not in classes]
        if absent or extra:
            raise UserError(
                f"{where}: multi-label columns do not match the dataset's classes: "
                f"missing {absent}, unexpected {extra}; expected one 0/1 column per class "
                f"{list(classes)}"
            )
    index = {name: i for i, name in enumerate(classes)}
    root_resolved = root.resolve()
    found: dict[str, list[tuple[np.ndarray | int, str]]] = {}
    for line, row in rows:
        at = f"{where} line {line}"
        split = row[split_column].strip().lower() if split_column is not None else "train"
        if split not in SPLITS:
            raise UserError(f"{at}: split {row[split_column]!r} is not one of {list(SPLITS)}")
        if multilabel:
            label: np.ndarray | int = _multihot(row, classes, at)
        else:
            label = _class_index(row[label_column].strip(), index, at)
        rel = _safe_relpath(root, root_resolved, row[image_column].strip(), at)
        found.setdefault(split, []).append((label, rel))
    if "train" not in found:
        raise UserError(f"{where}: no row has split 'train'; the training split is required")
    if not multilabel:
        counts = np.bincount([lab for lab, _ in found["train"]], minlength=len(classes))
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise UserError(f"{where}: no training image for class(es) {empty}")
    decoded = {
        split: [(_decode(root, rel, size, None), label, rel) for label, rel in items]
        for split, items in found.items()
    }
    return _assemble(decoded, None, multilabel=multilabel, num_classes=len(classes))


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


def _class_index(value: str, index: dict[str, int], at: str) -> int:
    if value in index:  # names first: classes named "0".."4" (grades) are names, not indices
        return index[value]
    if value.isdigit() and int(value) < len(index):
        return int(value)
    raise UserError(
        f"{at}: label {value!r} is not a class; expected one of {list(index)} "
        f"or an index 0..{len(index) - 1}"
    )


def _multihot(row: dict[str, str], classes: Sequence[str], at: str) -> np.ndarray:
    out = np.zeros(len(classes), dtype=np.float32)
    for i, name in enumerate(classes):
        value = row[name].strip()
        if value not in _MULTIHOT:
            raise UserError(
                f"{at}: column {name!r} holds {value!r}; multi-label values must be 0 or 1"
            )
        out[i] = _MULTIHOT[value]
    return out


def _safe_relpath(root: Path, root_resolved: Path, value: str, at: str) -> str:
    """The manifest path, normalised, after checking it stays inside root and exists."""
    if not value:
        raise UserError(f"{at}: empty image path")
    # resolve() follows symlinks, so a link inside root pointing outside is caught too
    if Path(value).is_absolute() or not (root / value).resolve().is_relative_to(root_resolved):
        raise UserError(
            f"{at}: image path {value!r} points outside the data root {root}; manifest paths "
            f"must be relative and stay inside it"
        )
    if not (root / value).is_file():
        raise UserError(f"{at}: image {value!r} not found under {root}")
    return posixpath.normpath(Path(value).as_posix())


def _check_args(classes: Sequence[str], size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not classes:
        raise ValueError("classes is empty")
    if len(set(classes)) != len(classes):
        raise UserError(f"the dataset's classes repeat a name: {list(classes)}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _decode(root: Path, rel: str, size: int, grayscale: bool | None) -> np.ndarray:
    """One image as uint8 [size, size] (greyscale) or [size, size, 3]; grey stays 2-D unless
    grayscale is False so that `_assemble` can decide the channel count for the whole dataset."""
    path = root / rel
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file must fail here, naming its path
            if im.mode.startswith("I"):
                # 16-bit (and PIL's 32-bit "I") greys: map 0..65535 onto 0..255 instead of
                # letting convert("L") clip everything above 255 to white
                wide = np.asarray(im).astype(np.float64)
                img = Image.fromarray((np.clip(wide, 0, 65535) / 257).round().astype(np.uint8))
            elif im.mode in GRAY_MODES or grayscale:
                img = im.convert("L")
            else:
                img = im.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
        raise UserError(
            f"cannot read image {rel} (under {root}): {exc}; replace or remove the file"
        ) from None
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _assemble(
    decoded: dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]],
    grayscale: bool | None,
    *,
    multilabel: bool,
    num_classes: int,
) -> dict[str, SplitArrays]:
    all_gray = all(arr.ndim == 2 for items in decoded.values() for arr, _, _ in items)
    channels = 1 if (grayscale or (grayscale is None and all_gray)) else 3
    out = {}
    for split, items in decoded.items():
        images = [
            arr[..., None]
            if channels == 1
            else (np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr)
            for arr, _, _ in items
        ]
        labels = [label for _, label, _ in items]
        out[split] = SplitArrays(
            images=np.stack(images).astype(np.uint8, copy=False),
            labels=(
                np.stack(labels).astype(np.float32).reshape(len(items), num_classes)
                if multilabel
                else np.asarray(labels, dtype=np.int64)
            ),
            paths=[rel for _, _, rel in items],
        )
    return out
