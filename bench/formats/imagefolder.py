"""The `imagefolder` format: `<folder>/<split>/<class name>/**/<image>`, as torchvision reads it.

Images are the files Pillow reads by extension and DICOM files (`.dcm`, or no extension with the
DICM marker; `bench.formats.dicom`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.cards import DatasetCard
from bench.errors import UserError
from bench.formats.base import SPLITS, Format, ProgressFn, SplitArrays, missing, register
from bench.formats.images import assemble, check_args, decode_all, inside_root, is_image_file
from bench.formats.labels import check_train_classes


@register
class ImageFolder(Format):
    name = "imagefolder"

    def check_files(self, card: DatasetCard, folder: Path) -> None:
        if not (folder / "train").is_dir():
            raise missing(card, folder / "train", " The training split is required.")
        if not (folder / "test").is_dir():
            raise missing(card, folder / "test", " The test split is required.")

    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        return read_imagefolder(
            card.folder(root),
            card.classes,
            size=card.image_size or 0,
            bit_depth=card.bit_depth,
            on_progress=on_progress,
        )


def read_imagefolder(
    root: Path,
    classes: Sequence[str],
    *,
    size: int,
    splits: Sequence[str] = SPLITS,
    grayscale: bool | None = None,
    bit_depth: int | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, SplitArrays]:
    """Read `root/<split>/<class name>/**/<image>`; the label is the class's position in `classes`.

    A missing split folder is left out of the result (the caller may carve val from train), but
    `train` is required and every class needs at least one training image. Files are ordered by
    class index, then relative path. `grayscale=None` keeps one channel only when every image of
    the dataset is greyscale; True/False force 1/3 channels. `bit_depth` is the depth 16-bit grey
    files fill (None: the data's; `bench.formats.images`). An image that is a symlink leading
    out of `root` is refused.
    """
    root = Path(root)
    check_args(classes, size)
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
    decoded = decode_all(root, found, size, grayscale, on_progress)
    return assemble(
        decoded, grayscale, multilabel=False, num_classes=len(classes), bit_depth=bit_depth
    )


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
    loose = [p.name for p in entries if p.is_file() and is_image_file(p)]
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
                if name.startswith(".") or not is_image_file(Path(dirpath, name)):
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
