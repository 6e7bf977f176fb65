"""Decoding image files into uint8 arrays, shared by the file formats; and the path check every
reader makes before it opens a path read from a file.

Decoded images are resized to `size` x `size` with Pillow's bilinear filter (which antialiases
when shrinking); the aspect ratio is NOT kept, like the `Resize((s, s))` the papers use. EXIF
orientation is ignored (pixels are taken as stored), as torchvision's ImageFolder does.

16-bit greyscale files (CT and X-ray exports often hold 12-bit data in them) are mapped to 8 bits
by the bit depth of the whole dataset, not of each image, so one tissue keeps one grey level
across images: the card's `bit_depth`, else the smallest of `BIT_DEPTHS` that holds the
dataset's largest value. 0 maps to 0 and 2**bits - 1 to 255.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.errors import UserError
from bench.formats.base import ProgressFn, SplitArrays
from bench.formats.dicom import DICOM_EXTENSIONS, decode_dicom, has_dicom_marker, has_dicom_name

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_EXTENSIONS)
# Modes that are one grey channel; 16/32-bit ones are rescaled to 8 bits in `assemble`.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
# The depths a 16-bit file's data may fill (a card's `bit_depth` is one of them).
BIT_DEPTHS = (8, 10, 12, 14, 16)

# ------------------------------------------------------------ listing files without decoding

# Set by `list_files`: `decode_all` then hands the reader's file list back instead of decoding.
_LISTING: ContextVar[bool] = ContextVar("medpeft_listing", default=False)


# {split: each image's group, in listed order}; empty when the data names no groups
Groups = Mapping[str, Sequence[str]]


class _Listed(Exception):
    """Carries the files a reader found out of the reader (raised by `decode_all`)."""

    def __init__(self, root: Path, found: dict[str, list[tuple[Any, str]]], groups: Groups) -> None:
        super().__init__("listed")
        self.root = root
        self.found = found
        self.groups = groups


def list_files(
    read: Callable[..., object], *args: Any, **kwargs: Any
) -> tuple[Path, dict[str, list[tuple[Any, str]]], Groups]:
    """(root, {split: [(label, path relative to root)]}, {split: [group]}): what
    `read(*args, **kwargs)` would decode, found and checked by the reader's own discovery (so the
    list cannot drift from what is read), but without opening any image; the groups are empty
    when the data names none. `read` is a format's reader or a function that calls one
    (`bench.dataset_arrays.read_arrays`); a ValueError if it never reaches the decoding step."""
    token = _LISTING.set(True)
    try:
        read(*args, **kwargs)
    except _Listed as listed:
        return listed.root, listed.found, listed.groups
    finally:
        _LISTING.reset(token)
    raise ValueError(f"{getattr(read, '__name__', read)} read no image files")


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


def safe_relpath(root: Path, root_resolved: Path, value: str, at: str) -> str:
    """An image path from a file, normalised, after checking it stays inside root and exists."""
    rel = inside_root(root, root_resolved, value, at)
    if not (root / rel).is_file():
        raise UserError(f"{at}: image {value!r} not found under {root}")
    return rel


def check_args(classes: Sequence[str], size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not classes:
        raise ValueError("classes is empty")
    if len(set(classes)) != len(classes):
        raise UserError(f"the dataset's classes repeat a name: {list(classes)}")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_image_file(path: Path) -> bool:
    """An image by its name, or a DICOM file without an extension (PACS exports are often named
    like `IM000001`), found by its DICM marker."""
    return is_image(path.name) or ("." not in path.name and has_dicom_marker(path))


def _decode(root: Path, rel: str, size: int, grayscale: bool | None) -> np.ndarray:
    """One image as uint8 [size, size] (greyscale) or [size, size, 3]; grey stays 2-D unless
    grayscale is False so that `assemble` can decide the channel count for the whole dataset.
    A 16-bit (or PIL's 32-bit "I") grey image, or a DICOM grey without a window, comes back
    uint16, still at its own depth, for `assemble` to map to 8 bits once the dataset's depth is
    known. DICOM files are decoded by `bench.formats.dicom`, everything else by Pillow."""
    path = root / rel
    try:
        img = _open_dicom(path) if _is_dicom(path) else _open_pillow(path, grayscale)
    except UserError as exc:  # pydicom missing, a multi-frame DICOM: already says what to do
        raise UserError(f"cannot read image {rel} (under {root}): {exc}") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
        raise UserError(
            f"cannot read image {rel} (under {root}): {exc}; replace or remove the file"
        ) from None
    if img.mode == "RGB" and grayscale:
        img = img.convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    if img.mode == "F":
        return np.clip(np.asarray(img).round(), 0, 65535).astype(np.uint16)
    return np.asarray(img, dtype=np.uint8)


def _is_dicom(path: Path) -> bool:
    """A DICOM file by its name, or by its DICM marker when the name is no known image type (a
    manifest may list `IM000001`); a `.png` is not opened twice to look."""
    name = path.name
    return has_dicom_name(name) or (not is_image(name) and has_dicom_marker(path))


def _open_pillow(path: Path, grayscale: bool | None) -> Image.Image:
    """A file Pillow reads, as "L", "RGB" or (16/32-bit grey) "F"."""
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file must fail here, naming its path
        if im.mode.startswith("I"):
            # resized as floats: convert("L") would clip everything above 255 to white
            wide = np.clip(np.asarray(im).astype(np.float32), 0, 65535)
            return Image.fromarray(wide)  # mode "F"
        if im.mode in GRAY_MODES or grayscale:
            return im.convert("L")
        return im.convert("RGB")


def _open_dicom(path: Path) -> Image.Image:
    """A DICOM file's display image (`decode_dicom`) as "L", "RGB" or (16-bit grey) "F"."""
    arr = decode_dicom(path)
    if arr.dtype == np.uint16:
        return Image.fromarray(arr.astype(np.float32))  # mode "F", resized like 16-bit PNGs
    return Image.fromarray(arr)


def data_bit_depth(peak: int) -> int:
    """The smallest of `BIT_DEPTHS` whose range 0..2**bits - 1 holds `peak` (at most 65535)."""
    return next((bits for bits in BIT_DEPTHS if peak < 2**bits), BIT_DEPTHS[-1])


def _to_8bit(
    decoded: dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]], bit_depth: int | None
) -> dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]]:
    """The uint16 images of `decoded` mapped onto 0..255 with one depth for the whole dataset:
    `bit_depth`, else the one its largest value needs."""
    wide = [
        (arr, rel) for items in decoded.values() for arr, _, rel in items if arr.dtype == np.uint16
    ]
    if not wide:
        return decoded
    peak, at = max((int(arr.max()), rel) for arr, rel in wide)
    bits = bit_depth or data_bit_depth(peak)
    top = 2**bits - 1
    if peak > top:
        raise UserError(
            f"image {at} has the value {peak}, above the card's bit_depth = {bits} (at most "
            f"{top}); raise bit_depth or remove it to take the depth from the data"
        )

    def narrow(arr: np.ndarray) -> np.ndarray:
        if arr.dtype != np.uint16:
            return arr
        return np.rint(arr.astype(np.float64) * 255 / top).astype(np.uint8)

    return {
        split: [(narrow(arr), label, rel) for arr, label, rel in items]
        for split, items in decoded.items()
    }


def assemble(
    decoded: dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]],
    grayscale: bool | None,
    *,
    multilabel: bool,
    num_classes: int,
    bit_depth: int | None = None,
    groups: Groups | None = None,
) -> dict[str, SplitArrays]:
    """{split: SplitArrays} of the decoded images: 16-bit greys mapped to 8 bits by the dataset's
    depth (`bit_depth` when given), one channel only when every image is grey (or `grayscale`);
    each split's `groups` when given."""
    decoded = _to_8bit(decoded, bit_depth)
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
            groups=list(groups[split]) if groups and split in groups else None,
        )
    return out


def decode_all(
    root: Path,
    found: Mapping[str, Sequence[tuple[np.ndarray | int, str]]],
    size: int,
    grayscale: bool | None,
    on_progress: ProgressFn | None,
    groups: Groups | None = None,
) -> dict[str, list[tuple[np.ndarray, np.ndarray | int, str]]]:
    """`_decode` every listed image on a thread pool (Pillow releases the GIL while decoding and
    resizing), keeping the listed order. Progress is reported from the calling thread, so the
    callback needs no locking; on the first failure pending images are cancelled. `groups` are
    only handed to `list_files` (the decoded cache keys on them); `assemble` attaches them."""
    if _LISTING.get():  # `list_files`: everything up to here ran, nothing is decoded
        listed = {split: list(items) for split, items in found.items()}
        raise _Listed(Path(root), listed, groups or {})
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
