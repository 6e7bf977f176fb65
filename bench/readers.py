"""Readers for image datasets: decode, resize and stack into uint8 arrays.

Every reader returns `{split: SplitArrays}` with images uint8 [N, H, W, C] (C = 1 or 3).
Formats: image folders, CSV manifests (one with a split column, or one per split), MedFMC /
mmcls split lists ("<file name> <label>" per line) and MedMNIST .npz files. Decoded images are
resized to `size` x `size` with Pillow's bilinear filter (which antialiases when shrinking); the
aspect ratio is NOT kept, like the `Resize((s, s))` the papers use. EXIF orientation is ignored
(pixels are taken as stored), as torchvision's ImageFolder does.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.errors import UserError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Modes that are one grey channel; 16/32-bit ones are rescaled to 8 bits in `_decode`.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_MULTIHOT = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}
# on_progress(done, total): called on the caller's thread, first with (0, total), then once
# per decoded image with done increasing by one up to (total, total)
ProgressFn = Callable[[int, int], None]


@dataclass
class SplitArrays:
    """One split: uint8 images [N, H, W, C], labels int64 [N] or float32 multi-hot [N, L],
    and each image's path relative to the data root."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


# ------------------------------------------------------------ listing files without decoding

# Set by `list_files`: `_decode_all` then hands the reader's file list back instead of decoding.
_LISTING: ContextVar[bool] = ContextVar("medpeft_listing", default=False)


class _Listed(Exception):
    """Carries the files a reader found out of the reader (raised by `_decode_all`)."""

    def __init__(self, root: Path, found: dict[str, list[tuple[Any, str]]]) -> None:
        super().__init__("listed")
        self.root = root
        self.found = found


def list_files(
    read: Callable[..., object], *args: Any, **kwargs: Any
) -> tuple[Path, dict[str, list[tuple[Any, str]]]]:
    """(root, {split: [(label, path relative to root)]}): what `read(*args, **kwargs)` would
    decode, found and checked by the reader's own discovery (so the list cannot drift from what
    is read), but without opening any image. `read` is a reader of this module or a function that
    calls one (`bench.data.read_arrays`); a ValueError if it never reaches the decoding step."""
    token = _LISTING.set(True)
    try:
        read(*args, **kwargs)
    except _Listed as listed:
        return listed.root, listed.found
    finally:
        _LISTING.reset(token)
    raise ValueError(f"{getattr(read, '__name__', read)} read no image files")


def read_imagefolder(
    root: Path,
    classes: Sequence[str],
    *,
    size: int,
    splits: Sequence[str] = SPLITS,
    grayscale: bool | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read `root/<split>/<class name>/**/<image>`; the label is the class's position in `classes`.

    A missing split folder is left out of the result (the caller may carve val from train), but
    `train` is required and every class needs at least one training image. Files are ordered by
    class index, then relative path. `grayscale=None` keeps one channel only when every image of
    the dataset is greyscale; True/False force 1/3 channels. An image that is a symlink leading
    out of `root` is refused.
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
    check_train_classes(
        [label for label, _ in found["train"]],
        classes,
        f"{root / 'train'}",
        "add images under train/<class name>/ or fix the card's classes",
    )
    decoded = _decode_all(root, found, size, grayscale, on_progress)
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
    root_resolved = root.resolve()
    for class_dir in (p for p in entries if p.is_dir()):
        # followlinks=False: a symlink loop cannot hang the scan; a symlinked class folder still works
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or not _is_image(name):
                    continue  # ._foo.png (macOS), README, thumbnails db...
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if os.path.islink(Path(dirpath, name)):
                    # a linked image is read only where it leads inside the dataset folder, as
                    # for paths read from manifests (an unpacked archive can hold such links)
                    inside_root(root, root_resolved, rel, f"{split_dir}", "symlinked image")
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
    onehot: bool = False,
    image_dir: str = "",
    image_suffix: str = "",
    split: str | None = None,
    ignore_columns: Sequence[str] = (),
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
    (.., absolute, escaping symlinks) are refused.
    """
    root, manifest = Path(root), Path(manifest)
    _check_args(classes, size)
    found = _collect_csv(
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
    decoded = _decode_all(root, found, size, None, on_progress)
    return _assemble(decoded, None, multilabel=multilabel, num_classes=len(classes))


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
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read one CSV manifest per split (ISIC 2018 style): `manifests[split]` = (manifest path,
    folder of its images), both relative to `root`. Options as for `read_csv_manifest`
    (`split_column` is accepted and ignored: each manifest is one split). `train` is required;
    the channel count is decided once for all splits (1 only when every image is grey).
    """
    root = Path(root)
    _check_args(classes, size)
    unknown = [s for s in manifests if s not in SPLITS]
    if unknown:
        raise UserError(f"{root}: manifest split(s) {unknown} are not among {list(SPLITS)}")
    if "train" not in manifests:
        raise UserError(f"{root}: no 'train' manifest; the training split is required")
    found: dict[str, list[tuple[np.ndarray | int, str]]] = {}
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
        found.update(
            _collect_csv(
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
            )
        )
    if not multilabel:
        train = [label for label, _ in found["train"]]
        check_train_classes(train, classes, f"manifest {root / manifests['train'][0]}")
    decoded = _decode_all(root, found, size, None, on_progress)
    return _assemble(decoded, None, multilabel=multilabel, num_classes=len(classes))


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
) -> dict[str, list[tuple[np.ndarray | int, str]]]:
    """{split: [(label, image path relative to root)]} in manifest order, every row checked."""
    if multilabel and onehot:
        raise ValueError("onehot is a single-label encoding; it cannot be combined with multilabel")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    header, rows = _read_csv(manifest)
    where = f"manifest {manifest}"
    per_class = multilabel or onehot
    # the split column (if any) is never a class column, even when `split` makes it unread
    meta = {image_column, split_column, label_column, *ignore_columns}
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
            label = _multihot(row, classes, at)
        elif onehot:
            label = _onehot(row, classes, at)
        else:
            label = _class_index(row[label_column].strip(), index, at)  # type: ignore[index]
        value = row[image_column].strip()
        if not value:
            raise UserError(f"{at}: empty image path")
        value += image_suffix
        if image_dir:
            # an absolute value stays absolute here and is refused by _safe_relpath
            value = posixpath.join(Path(image_dir).as_posix(), value)
        rel = _safe_relpath(root, root_resolved, value, at)
        found.setdefault(row_split, []).append((label, rel))
    return found


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


def _onehot(row: dict[str, str], classes: Sequence[str], at: str) -> int:
    hot = _multihot(row, classes, at)
    names = [classes[i] for i in np.flatnonzero(hot)]
    if len(names) != 1:
        raise UserError(
            f"{at}: one-hot row has {len(names)} classes set {names}; exactly one of the columns "
            f"{list(classes)} must be 1"
        )
    return int(np.argmax(hot))


def check_train_classes(
    labels: Sequence[Any] | np.ndarray, classes: Sequence[str], where: str, hint: str = ""
) -> None:
    """Every class of a single-label dataset needs a training image (or its logit never trains);
    `labels` are the training split's class indices (a list or an array)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(
            f"{where}: no training image for class(es) {empty}" + (f"; {hint}" if hint else "")
        )


def inside_root(
    root: Path, root_resolved: Path, value: str, at: str, what: str = "image path"
) -> str:
    """`value`, a path read from a file (a manifest row, an annotation line, a card), normalised
    and relative to `root`, after checking it stays inside: the one check every reader makes
    before joining such a path, so a downloaded file cannot make the suite read elsewhere."""
    if not value:
        raise UserError(f"{at}: empty {what}")
    # The normalised path is both the one checked and the one later opened: checking the raw
    # value but opening its normpath could differ when a symlinked folder precedes a '..'.
    rel = posixpath.normpath(Path(value).as_posix())
    try:
        inside = not Path(value).is_absolute() and (
            (root / rel).resolve().is_relative_to(root_resolved)  # follows symlinks
        )
    except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise UserError(f"{at}: {what} {value!r} is not a usable path ({exc})") from None
    if not inside:
        raise UserError(
            f"{at}: {what} {value!r} points outside the data root {root}; paths must stay "
            "inside the dataset folder (relative, with no '..' or symlink leading out of it)"
        )
    return rel


def _safe_relpath(root: Path, root_resolved: Path, value: str, at: str) -> str:
    """An image path from a file, normalised, after checking it stays inside root and exists."""
    rel = inside_root(root, root_resolved, value, at)
    if not (root / rel).is_file():
        raise UserError(f"{at}: image {value!r} not found under {root}")
    return rel


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


def _decode_all(
    root: Path,
    found: Mapping[str, Sequence[tuple[np.ndarray | int, str]]],
    size: int,
    grayscale: bool | None,
    on_progress: ProgressFn | None,
) -> dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]]:
    """`_decode` every listed image on a thread pool (Pillow releases the GIL while decoding and
    resizing), keeping the listed order. Progress is reported from the calling thread, so the
    callback needs no locking; on the first failure pending images are cancelled."""
    if _LISTING.get():  # `list_files`: everything up to here ran, nothing is decoded
        raise _Listed(Path(root), {split: list(items) for split, items in found.items()})
    jobs = [rel for items in found.values() for _, rel in items]
    total = len(jobs)
    results: list[np.ndarray | None] = [None] * total
    if on_progress is not None:
        on_progress(0, total)
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        futures = {
            pool.submit(_decode, root, rel, size, grayscale): i for i, rel in enumerate(jobs)
        }
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if on_progress is not None:
                on_progress(done, total)
    finally:
        # also on Ctrl-C: drop the queue instead of decoding the rest of the dataset first
        pool.shutdown(wait=True, cancel_futures=True)
    out: dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]] = {}
    position = 0
    for split, items in found.items():
        out[split] = []
        for label, rel in items:
            out[split].append((results[position], label, rel))  # type: ignore[arg-type]
            position += 1
    return out


# ------------------------------------------------------------------- MedFMC / mmcls split lists


def read_split_lists(
    root: Path,
    files: Mapping[str, str],
    classes: Sequence[str],
    *,
    size: int,
    images: str = "images",
    multilabel: bool,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read MedFMC / mmcls annotation files: `files[split]` is a text file (relative to `root`)
    with one "<file name> <label>" line per image, the image being `root/<images>/<file name>`.

    Single-label: the label is a class index or a class name (without spaces). Multi-label: a
    0/1 vector written "0,1,0" (one token) or "0 1 0" (one token per class). File names may hold
    spaces (MedFMC Colon's do), so labels are split off from the right. Blank lines are skipped.
    `train` is required; each single-label class needs a training image. Order: file order.
    """
    root = Path(root)
    _check_args(classes, size)
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
            items.append((label, _safe_relpath(root, root_resolved, value, at)))
        if not items:
            raise UserError(
                f"split {split!r}: annotation file {path} has no entries; expected one "
                f"'<file name> <label>' line per image"
            )
        found[split] = items
    if not multilabel:
        train = [label for label, _ in found["train"]]
        check_train_classes(train, classes, f"annotation file {root / files['train']}")
    decoded = _decode_all(root, found, size, None, on_progress)
    return _assemble(decoded, None, multilabel=multilabel, num_classes=len(classes))


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
        return name, _class_index(value, index, at)
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
    bad = [v for v in values if v not in _MULTIHOT]
    if bad:
        raise UserError(f"{at}: label value(s) {bad} are not 0 or 1")
    return name, np.array([_MULTIHOT[v] for v in values], dtype=np.float32)


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
