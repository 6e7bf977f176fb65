"""Checks before any cell runs: the results folder takes records, nothing foreign sits where
they go, every distinct model builds, and frozen-feature caches fit on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cache_dirs import check_cache_writable
from bench.config import CellConfig
from bench.errors import UserError
from bench.feature_cache import (
    MANIFEST,
    bytes_per_image,
    cache_path,
    check_free_space,
    feature_cache_dir,
    human_bytes,
)
from bench.frozen_features import feature_identity, feature_mode
from bench.grid.expand import data_key
from bench.harness import build_model
from bench.records import read_record, record_path
from bench.transforms import Preprocess


def build_key(cell: CellConfig, num_classes: int) -> tuple:
    """What decides whether a cell's model builds: cells sharing it need one test build."""
    return (cell.method, repr(sorted(cell.hparams.items())), num_classes, cell.img_size)


def preflight_builds(cells: list[CellConfig], datasets: dict[str, Any], source) -> list[str]:
    """Build each distinct (method, hyperparameters, classes, size) once, so a bad value or a weights
    file that does not fit the architecture fails now rather than cells into the grid. Methods
    that preload frozen features get their disk use estimated and checked; returns notes."""
    seen: set = set()
    notes: list[str] = []
    caches: set = set()
    for cell in cells:
        data = datasets[data_key(cell)]
        key = build_key(cell, data.num_classes)
        if key not in seen:
            seen.add(key)
            model, *_, cfg = build_model(cell, source, data.num_classes)
            # only where the cell will use the cache: not a head trained on augmented views
            if feature_mode(model, cell)[0] != "preload":
                continue
            # methods reading the same features (linear, knn, mlp-head) share one cache
            cache = (repr(model.feature_identity()), cell.dataset, cell.img_size)
            if cache not in caches:
                caches.add(cache)
                notes.append(cache_estimate(model, cell, data, cfg))
    return notes


def cache_estimate(model, cell: CellConfig, data, cfg: dict) -> str:
    """Disk the frozen-feature cache of one (method, dataset) will take; fails if it won't fit."""
    prep = Preprocess.for_backbone(cfg, img_size=cell.img_size, augment=cell.augment)
    per_image = bytes_per_image(model.feature_shapes(), model.cache_dtype)
    total = sum(len(s) for s in data.splits.values()) * per_image
    missing = 0
    for split, part in data.splits.items():
        identity = feature_identity(model, cell, data, split, prep)
        if not (cache_path(identity, model.cache_dtype) / MANIFEST).is_file():
            missing += len(part) * per_image
    if missing:
        check_cache_writable(feature_cache_dir())
        check_free_space(feature_cache_dir(), missing)
    state = f"{human_bytes(missing)} to write" if missing else "already cached"
    return (
        f"{cell.method} on {cell.dataset}: frozen-feature cache of {human_bytes(total)} "
        f"({human_bytes(per_image)} per image, {model.cache_dtype}; {state}) in "
        f"{feature_cache_dir()}"
        + (f"; --set {cell.method}.preload=false runs without it" if "preload" in cell.hparams
           else "")
    )  # fmt: skip


def check_foreign_files(cells: list[CellConfig], results: Path) -> None:
    """A file at a cell's record path that is not this cell's record (not a record at all, or
    another cell's) is someone else's: never overwrite it, never count it as the cell's."""
    blocked = [
        p
        for p, run_id in ((record_path(results, c.run_id), c.run_id) for c in cells)
        if p.exists() and read_record(p, run_id=run_id) is None
    ]
    if blocked:
        raise UserError(
            f"{len(blocked)} file(s) in {results} sit where records go but are not medpeft-bench records "
            f"of those cells (first: {blocked[0]}); move them away or choose another --results "
            "folder"
        )
