"""The `demo` format: the built-in synthetic dataset, generated in memory (`bench.demo`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.cards import DatasetCard
from bench.demo import IMG_SIZE, make_demo
from bench.formats.base import Format, ProgressFn, SplitArrays, register


@register
class Demo(Format):
    name = "demo"
    decodes_files = False

    def check_available(self, card: DatasetCard, root: Path) -> None:
        return  # generated, never missing

    def stored_image_size(self, card: DatasetCard, root: Path) -> int | None:
        return IMG_SIZE

    def split_labels(self, card: DatasetCard, root: Path) -> dict[str, np.ndarray]:
        return {s: np.asarray(labels) for s, (_, labels) in make_demo().items()}  # in memory

    def read(
        self, card: DatasetCard, root: Path, on_progress: ProgressFn | None = None
    ) -> dict[str, SplitArrays]:
        return {
            s: SplitArrays(images, labels, [f"{s}[{i}]" for i in range(len(labels))])
            for s, (images, labels) in make_demo().items()
        }
