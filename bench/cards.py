"""A dataset card: one catalog entry, as parsed from its `datasets/*.toml` file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    bit_depth: int | None = None  # the depth 16-bit grey files fill; None: the data's
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
