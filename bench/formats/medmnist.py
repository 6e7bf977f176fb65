"""The `medmnist-npz` format: the exact .npz files the `medmnist` package downloads, their image
size read from the header alone, and downloading them through the package when it is installed."""

from __future__ import annotations

import dataclasses
import math
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np
import psutil

from bench.cards import DatasetCard
from bench.errors import UserError
from bench.formats.base import SPLITS, Format, ProgressFn, SplitArrays, missing, register

MEDMNIST_RECORD = "https://zenodo.org/records/10519652"
# The sides MedMNIST+ ships every 2D dataset at; `<name>_<size>` selects one.
MEDMNIST_SIZES = (28, 64, 128, 224)


@register
class MedMNIST(Format):
    name = "medmnist-npz"
    decodes_files = False

    def location(self, card: DatasetCard, root: Path) -> Path:
        return card.folder(root) / (card.file or f"{card.name}.npz")

    def check_available(self, card: DatasetCard, root: Path) -> None:
        path = self.location(card, root)
        if not path.is_file():
            hint = f" `bench data download {card.name}` fetches it through the medmnist package."
            raise missing(card, path, hint=hint)

    def stored_image_size(self, card: DatasetCard, root: Path) -> int | None:
        try:
            size = npz_image_size(self.location(card, root))
        except (OSError, UserError, ValueError, KeyError):
            size = None
        return size or card.image_size

    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        return read_medmnist_npz(
            self.location(card, root), num_classes=len(card.classes), multilabel=card.multilabel
        )

    def split_labels(self, card: DatasetCard, root: Path) -> dict[str, np.ndarray] | None:
        """The label arrays alone: an npz member is read on its own, the images stay on disk."""
        try:
            with np.load(self.location(card, root), allow_pickle=False) as npz:
                labels = {s: npz[f"{s}_labels"] for s in SPLITS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            return None  # the real run's reader says what is wrong with the file
        return {s: a if card.multilabel else a.reshape(-1) for s, a in labels.items()}

    def train_labels_where(self, card: DatasetCard, root: Path) -> tuple[str, str]:
        return (
            str(self.location(card, root)),
            "train_labels never holds their index; re-download it or fix the card's classes",
        )

    def sized(self, card: DatasetCard, name: str, size: int) -> DatasetCard | None:
        sizes = tuple(card.medmnist.get("sizes", MEDMNIST_SIZES))
        if size not in sizes:
            raise UserError(
                f"dataset {name!r}: MedMNIST ships {card.name} at sizes {list(sizes)}; "
                f"use {card.name} (28 px) or {card.name}_<size>"
            )
        if size == 28:
            return card
        flag = card.medmnist.get("flag", card.name)
        return dataclasses.replace(card, name=name, file=f"{flag}_{size}.npz", image_size=size)

    def download(self, card: DatasetCard, root: Path) -> Path:
        folder = card.folder(root)
        folder.mkdir(parents=True, exist_ok=True)
        return download_medmnist(
            card.medmnist.get("flag", card.name), card.image_size or 28, folder
        )


def read_medmnist_npz(path: Path, *, num_classes: int, multilabel: bool) -> dict[str, SplitArrays]:
    """Read a MedMNIST .npz as the `medmnist` package downloads it: {split}_images uint8
    [N, H, W] or [N, H, W, 3], {split}_labels [N, 1] class indices or [N, L] 0/1 (ChestMNIST).
    Paths are "split[i]"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MedMNIST file {path} not found")
    hint = f"re-download it (MedMNIST Zenodo record {MEDMNIST_RECORD})"
    if not zipfile.is_zipfile(path):
        # np.load would try to unpickle it and report a confusing allow_pickle error
        raise UserError(f"{path} is not a .npz (zip) archive, or it is truncated; {hint}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {path}: {exc}; {hint}") from None
    out = {}
    with npz:
        present = sorted(npz.files)
        wanted = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in wanted if k not in present]
        if missing:
            raise UserError(
                f"{path}: missing array(s) {missing}; present: {present}. A MedMNIST file holds "
                f"{wanted}"
            )
        _check_fits_in_memory(path, npz.zip, wanted, hint)
        for split in SPLITS:
            try:
                images = npz[f"{split}_images"]
                labels = npz[f"{split}_labels"]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise UserError(
                    f"cannot read the {split} arrays of {path}: {exc}; {hint}"
                ) from None
            out[split] = _check_npz_split(path, split, images, labels, num_classes, multilabel)
    return out


def _check_fits_in_memory(path: Path, zf: zipfile.ZipFile, names: list[str], hint: str) -> None:
    """Refuse arrays whose headers declare more bytes than the memory available: numpy allocates
    the declared shape before reading any data, so a corrupt or hostile header would end in a
    MemoryError traceback (or in swapping) instead of a message."""
    declared: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    for name in names:
        try:
            with zf.open(f"{name}.npy") as f:
                shape, dtype = _npy_header(f)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
            continue  # reading the array reports it, with the re-download hint
        declared[name] = (shape, dtype, math.prod(shape) * dtype.itemsize)
    total = sum(size for _, _, size in declared.values())
    available = psutil.virtual_memory().available
    if total <= available:
        return
    from bench.feature_cache import human_bytes

    name, (shape, dtype, size) = max(declared.items(), key=lambda item: item[1][2])
    raise UserError(
        f"{path}: array {name} declares shape {shape} of {dtype} = {human_bytes(size)} "
        f"({human_bytes(total)} for the six arrays), more than the {human_bytes(available)} of "
        f"memory available; the file is corrupt or too large for this machine: {hint}, or use a "
        "smaller image size"
    )


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header at the start of `f`, without reading the data."""
    fmt = np.lib.format
    major, _ = fmt.read_magic(f)
    if major == 1:
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif major == 2:
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    return shape, dtype


def _check_npz_split(
    path: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    multilabel: bool,
) -> SplitArrays:
    where = f"{path}: {split}"
    if images.dtype != np.uint8:
        raise UserError(f"{where}_images has dtype {images.dtype}; expected uint8 pixels")
    if images.ndim == 3:
        images = images[..., None]
    elif not (images.ndim == 4 and images.shape[-1] in (1, 3)):
        raise UserError(
            f"{where}_images has shape {images.shape}; expected [N, H, W] or [N, H, W, 3]"
        )
    if len(images) != len(labels):
        raise UserError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise UserError(f"{where}: the split is empty")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise UserError(f"{where}_labels has dtype {labels.dtype}; expected integer labels")
    if multilabel:
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise UserError(
                f"{where}_labels has shape {labels.shape}; expected [N, {num_classes}] "
                f"(one 0/1 column per class)"
            )
        if not np.isin(labels, (0, 1)).all():
            raise UserError(f"{where}_labels holds values other than 0 and 1")
        out_labels = labels.astype(np.float32)
    else:
        if not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
            raise UserError(
                f"{where}_labels has shape {labels.shape}; expected [N, 1] class indices "
                f"(is this a multi-label file?)"
            )
        out_labels = labels.reshape(-1).astype(np.int64)
        low, high = int(out_labels.min()), int(out_labels.max())
        if low < 0 or high >= num_classes:
            raise UserError(
                f"{where}_labels range over {low}..{high}; expected class indices "
                f"0..{num_classes - 1}"
            )
    return SplitArrays(
        images=np.ascontiguousarray(images),
        labels=out_labels,
        paths=[f"{split}[{i}]" for i in range(len(images))],
    )


def npz_image_size(path: Path) -> int | None:
    """The side of `train_images` in a MedMNIST .npz, read from the .npy header inside the zip
    without loading the pixels; None when the file or header cannot be read."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("train_images.npy") as f:
            shape, _ = _npy_header(f)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if len(shape) == 4 and shape[-1] in (1, 3):
        return int(shape[2])
    return int(shape[-1]) if len(shape) == 3 else None


def download_medmnist(flag: str, size: int, root: Path) -> Path:
    """Download `<flag>.npz` (size 28) or `<flag>_<size>.npz` into `root` with the `medmnist`
    package (v3 API) and return its path; the package checks the MD5 and skips a good file."""
    root = Path(root)
    filename = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    manual = (
        f"download {filename} manually from the MedMNIST Zenodo record {MEDMNIST_RECORD} "
        f"into {root}"
    )
    try:
        import medmnist
    except ImportError:
        raise UserError(
            f"the `medmnist` package is not installed: run `pip install medmnist`, or {manual}"
        ) from None
    info = getattr(medmnist, "INFO", {})
    if flag not in info:
        raise UserError(f"unknown MedMNIST flag {flag!r}; known: {', '.join(sorted(info))}")
    dataset_class = getattr(medmnist, info[flag]["python_class"], None)
    if dataset_class is None:
        # medmnist/__init__ swallows the import errors of its dataset module (torch/torchvision)
        raise UserError(
            f"the `medmnist` package has no {info[flag]['python_class']} class (its dependencies "
            f"may be missing; `pip install medmnist` again), or {manual}"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        # one split suffices: the npz holds all three; "test" keeps the arrays it loads small
        dataset_class(split="test", download=True, root=str(root), size=size)
    except Exception as exc:  # RuntimeError (network), AssertionError (size), TypeError (old API)
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(
            f"downloading {filename} with medmnist failed: {cause}. Or {manual}"
        ) from None
    path = root / filename
    if not path.is_file():
        raise UserError(f"medmnist reported success but {path} is missing; {manual}")
    return path
