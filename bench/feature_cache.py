"""Frozen-feature cache: a frozen model's per-image features, computed once, kept on disk as
memory-mapped `.npy` arrays and verified before every use (FPT+'s preloading).

A cache directory is named by a hash of everything that determines its contents: the dataset's
identity and the split's image bytes in order (so rows are keyed by index and content, never by
file name), the backbone and its weights, the input normalisation and size, and the method's
feature settings. A `manifest.json`, written last, records that identity, the shapes, and each
array's size and SHA-256; a directory without a complete, matching manifest or whose arrays fail
the checks is rebuilt, never used. Builds go to a temporary directory renamed into place, so a
crash or a concurrent runner never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.backbones import file_sha256
from bench.cache_dirs import STALE_TEMP_S, cache_root, check_cache_writable
from bench.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = {"float32": np.float32, "float16": np.float16}
# Free space to leave on the disk beyond the cache itself.
DISK_MARGIN = 256 * 2**20
# The temporary folder of a build (and of a decoded-cache write): .<key>.<pid>.<random>.tmp
TEMP_DIR_NAME = re.compile(r"^\.[0-9a-f]{24}\.\d+\.[0-9a-f]{8}\.tmp$")


def feature_cache_dir() -> Path:
    """$MEDPEFT_CACHE/features (default ~/.cache/medpeft-bench/features)."""
    return cache_root() / "features"


def remove_stale_temp_dirs(folder: Path, *, age_s: float = STALE_TEMP_S) -> int:
    """Delete the temporary build folders in `folder` that no writer touched for `age_s`: their
    writer was killed (a live build touches its folder at every batch). Returns how many."""
    from bench.records import remove_old_temp

    return remove_old_temp(folder, age_s=age_s, name_ok=TEMP_DIR_NAME.match)


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of a split's images, shape and order included: row i is image i's features."""
    digest = hashlib.sha256(repr((tuple(images.shape), str(images.dtype))).encode())
    array = images.contiguous().numpy()
    for start in range(0, len(array), 256):
        digest.update(array[start : start + 256].tobytes())
    return digest.hexdigest()


def cache_key(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(identity: dict[str, Any], dtype: str, *, root: Path | None = None) -> Path:
    """The directory of the cache for `identity` stored as `dtype`."""
    return (root or feature_cache_dir()) / cache_key({**identity, "dtype": dtype})


def bytes_per_image(shapes: dict[str, tuple[int, ...]], dtype: str) -> int:
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    return sum(int(np.prod(s)) * itemsize for s in shapes.values())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # unreachable


def check_free_space(where: Path, needed: int) -> int:
    """Free bytes at `where` (its nearest existing parent); a clear error when `needed` won't fit."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + DISK_MARGIN > free:
        raise UserError(
            f"the feature cache needs about {human_bytes(needed)} at {where} but only "
            f"{human_bytes(free)} is free; free some space, point $MEDPEFT_CACHE at a larger disk, "
            "use --set METHOD.cache_dtype=float16 (half the size) or --set METHOD.preload=false"
        )
    return free


@dataclass
class CacheEntry:
    """One split's cached features, opened read-only as memory maps."""

    path: Path
    arrays: dict[str, np.ndarray]
    hit: bool  # True: an existing verified cache was used; False: built now
    bytes_on_disk: int
    seconds: float
    rebuilt_because: str | None = None


def open_cache(path: Path, identity: dict[str, Any]) -> dict[str, np.ndarray] | str:
    """The verified arrays of the cache at `path`, or the reason it cannot be used."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "missing" if not path.exists() else "incomplete (no manifest)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "corrupt manifest"
    if manifest.get("format") != FORMAT_VERSION or manifest.get("identity") != json.loads(
        json.dumps(identity, default=str)
    ):
        return "stale (made with other settings or another format)"
    arrays = {}
    for name, meta in files.items():
        file = path / f"{name}.npy"
        try:
            if file.stat().st_size != meta["bytes"]:
                return f"corrupt ({file.name} has the wrong size)"
            if file_sha256(file) != meta["sha256"]:
                return f"corrupt ({file.name} fails its checksum)"
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError):
            return f"corrupt ({file.name} unreadable)"
        if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
            return f"corrupt ({file.name} has shape {array.shape} {array.dtype})"
        arrays[name] = array
    return arrays


def build_cache(
    path: Path,
    identity: dict[str, Any],
    *,
    count: int,
    shapes: dict[str, tuple[int, ...]],
    dtype: str,
    compute: Callable[[int, int], dict[str, torch.Tensor]],
    batch_size: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Fill a new cache for `count` images; `compute(start, end)` returns their features."""
    check_cache_writable(path.parent)
    remove_stale_temp_dirs(path.parent)  # before the space check: what they held is free again
    check_free_space(path.parent, count * bytes_per_image(shapes, dtype))
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        maps = {
            name: np.lib.format.open_memmap(
                tmp / f"{name}.npy", mode="w+", dtype=DTYPES[dtype], shape=(count, *shape)
            )
            for name, shape in shapes.items()
        }
        for start in range(0, count, batch_size):
            end = min(start + batch_size, count)
            out = compute(start, end)
            for name, array in maps.items():
                value = out[name].detach().float().cpu().numpy()
                if value.shape[1:] != array.shape[1:]:
                    raise RuntimeError(
                        f"feature {name!r} has shape {value.shape[1:]}, expected {array.shape[1:]}"
                    )
                array[start:end] = value
            os.utime(tmp)  # alive: other runners' remove_stale_temp_dirs leave this folder alone
            if on_progress is not None:
                on_progress(end, count)
        files = {}
        for name, array in maps.items():
            array.flush()
            file = tmp / f"{name}.npy"
            files[name] = {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "bytes": file.stat().st_size,
                "sha256": file_sha256(file),
            }
        del maps
        manifest = {"format": FORMAT_VERSION, "identity": identity, "count": count, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if path.exists():
            if not isinstance(open_cache(path, identity), str):
                # Another runner finished the same build first: keep theirs (it may be in use).
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(path, ignore_errors=True)  # unusable and not ours to keep
        try:
            os.replace(tmp, path)
        except OSError:  # another runner renamed its identical build into place meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_or_build(
    identity: dict[str, Any],
    *,
    count: int,
    shapes: dict[str, tuple[int, ...]],
    dtype: str,
    compute: Callable[[int, int], dict[str, torch.Tensor]],
    batch_size: int,
    root: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CacheEntry:
    """Open the verified cache for `identity`, building (or rebuilding) it when it is not usable."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {list(DTYPES)}, not {dtype!r}")
    path = cache_path(identity, dtype, root=root)
    identity = {**identity, "dtype": dtype}
    t0 = time.perf_counter()
    found = open_cache(path, identity)
    if not isinstance(found, str) and (
        set(found) != set(shapes) or any(found[n].shape != (count, *shapes[n]) for n in shapes)
    ):
        found = "stale (its arrays do not have the requested shapes)"
    reason = None
    if isinstance(found, str):
        reason = None if found == "missing" else found
        if reason:
            log.warning("feature cache %s is %s; rebuilding it", path, reason)
            shutil.rmtree(path, ignore_errors=True)
        build_cache(
            path,
            identity,
            count=count,
            shapes=shapes,
            dtype=dtype,
            compute=compute,
            batch_size=batch_size,
            on_progress=on_progress,
        )
        found = open_cache(path, identity)
        if isinstance(found, str):
            raise RuntimeError(f"feature cache {path} is {found} right after building it")
        hit = False
    else:
        hit = True
    size = sum((path / f"{name}.npy").stat().st_size for name in found)
    return CacheEntry(
        path=path,
        arrays=found,
        hit=hit,
        bytes_on_disk=size,
        seconds=time.perf_counter() - t0,
        rebuilt_because=reason,
    )


class CachedFeatures:
    """Feature rows gathered by image index from a cache entry, as float32 on `device`."""

    def __init__(self, arrays: dict[str, np.ndarray], device: torch.device) -> None:
        self.arrays = arrays
        self.device = device

    def __call__(
        self, index: torch.Tensor, images: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        rows = index.cpu().numpy()
        return {
            name: torch.from_numpy(np.ascontiguousarray(array[rows]))
            .to(self.device, non_blocking=True)
            .float()
            for name, array in self.arrays.items()
        }


class LiveFeatures:
    """Features computed by the frozen model at every step, from the un-augmented batch."""

    def __init__(self, model: torch.nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor]):
        self.model = model
        self.prepare = prepare

    def __call__(self, index: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.frozen_features(self.prepare(images))
