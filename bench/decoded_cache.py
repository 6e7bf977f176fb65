"""Decoded-image cache: a dataset read from image files is decoded once, kept on disk as `.npy`
arrays and memory-mapped on later loads, so `bench run` neither re-decodes thousands of images
nor holds them in process memory (512 px ISIC 2018 is ~8 GB of pixels).

An entry, `$MEDPEFT_CACHE/decoded/<key>/`, holds what `bench.data.load_dataset` makes of the files:
per split the images uint8 [N, C, H, W] (`<split>.images.npy`, the layout the tensors use, so a
hit needs no transposed copy), the labels (`.labels.npy`), the file paths (`.paths.json`) and
the patient/study groups where the data names them (`.groups.json`), after the validation split
is carved; `meta.json`, written last, holds the identity, the carve protocol, shapes, sizes and
the dataset fingerprint. The key hashes everything that determines those arrays: the card's
reader fields, the dataset folder, every file the reader would read (found by the reader's own
discovery, `bench.formats.images.list_files`) with its split, label, group, size and mtime in
ns, and the reading code (the formats, carving, Pillow, numpy and pydicom versions). An edited,
added or removed file therefore gives another key. Entries are built in a temporary folder
renamed into place; a hit is checked against the fingerprint recorded when it was written
(computed anyway while loading), and an unusable entry is removed and the files decoded instead.

Only image-file formats are cached (not `medmnist-npz`, already one array file, nor `demo`).
`MEDPEFT_DECODED_CACHE=0` turns the cache off; `bench data check` always decodes the files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from bench import dataset_arrays, formats, group_splits, splits
from bench.cards import DatasetCard
from bench.dataset_arrays import VAL_SEED, read_arrays
from bench.errors import UserError
from bench.formats import SplitArrays, get_format
from bench.formats.images import list_files

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META = "meta.json"
ENV_SWITCH = "MEDPEFT_DECODED_CACHE"
SPLITS = ("train", "val", "test")
# "use": read a hit, else decode and write; "files": decode, write when absent; "off": neither.
MODES = ("use", "files", "off")
# A file modified this recently may be rewritten within the same timestamp tick (ms on ext4, 1-2 s
# on HFS+/FAT) with an unchanged size, which its key could not see: such data is not cached yet.
SETTLE_NS = 2 * 10**9


def decoded_cache_dir() -> Path:
    """$MEDPEFT_CACHE/decoded (default ~/.cache/medpeft-bench/decoded)."""
    from bench.cache_dirs import cache_root

    return cache_root() / "decoded"


def enabled() -> bool:
    """False when $MEDPEFT_DECODED_CACHE is 0/false/no/off."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    return value not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Entry:
    """Where the cache of one dataset's current files lives, and what it must hold."""

    path: Path
    identity: dict[str, Any]
    mode: str
    card: DatasetCard
    root: Path
    newest_ns: int  # the newest mtime among the files
    listed_ns: int  # when they were listed


def lookup(card: DatasetCard, root: Path, mode: str = "use") -> Entry | None:
    """The entry for the card's files as they are now; None when the cache does not apply (an
    array format, mode "off", $MEDPEFT_DECODED_CACHE=0). Lists and stats the files (no decoding);
    raises the reader's UserError when the files do not match the card."""
    if mode not in MODES:
        raise ValueError(f"decoded_cache must be one of {MODES}, got {mode!r}")
    if mode == "off" or not get_format(card.format).decodes_files or not enabled():
        return None
    identity, newest_ns, listed_ns = source_identity(card, root)
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return Entry(
        path=decoded_cache_dir() / hashlib.sha256(blob.encode()).hexdigest()[:24],
        identity=identity,
        mode=mode,
        card=card,
        root=Path(root),
        newest_ns=newest_ns,
        listed_ns=listed_ns,
    )


def source_identity(card: DatasetCard, root: Path) -> tuple[dict[str, Any], int, int]:
    """(identity, newest mtime, listing time) of what `load_dataset` would decode; the identity
    as it reads back from meta.json (JSON types)."""
    listed_ns = time.time_ns()
    folder, found, groups = list_files(read_arrays, card, root)
    digest = hashlib.sha256()
    count, newest = 0, 0
    for split, items in found.items():
        for i, (label, rel) in enumerate(items):
            st = os.stat(folder / rel)
            value = label.tolist() if isinstance(label, np.ndarray) else int(label)
            fields = [split, rel, value, st.st_size, st.st_mtime_ns]
            if split in groups:  # a regrouped patient changes the carved val
                fields.append(groups[split][i])
            line = json.dumps(fields)
            digest.update(line.encode() + b"\n")
            count, newest = count + 1, max(newest, st.st_mtime_ns)
    identity = {
        "format": FORMAT_VERSION,
        "card": {
            "name": card.name,
            "format": card.format,
            "task": card.task,  # multi-label or not changes how labels are read
            "classes": list(card.classes),
            "image_size": card.image_size,
            "bit_depth": card.bit_depth,  # how 16-bit greys are mapped to 8 bits
            "reader": card.reader,
            "val_fraction": card.val_fraction,  # the carved split is stored
            "val_seed": VAL_SEED,
        },
        "folder": str(Path(folder).resolve()),
        "code": code_digest(),
        "files": {"count": count, "sha256": digest.hexdigest()},
    }
    return json.loads(json.dumps(identity)), newest, listed_ns


@functools.cache
def code_digest() -> str:
    """Hash of the code that turns files into the cached arrays: a suite upgrade that changes
    decoding, resizing or carving must not be served arrays made by the old code."""
    digest = hashlib.sha256(f"Pillow {PIL.__version__} numpy {np.__version__}".encode())
    # DICOM files are decoded by pydicom, an optional extra
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        digest.update(f" pydicom {importlib.metadata.version('pydicom')}".encode())
    files = sorted(Path(formats.__file__).parent.glob("*.py"))
    carving = (splits, group_splits, dataset_arrays)
    for path in [*files, *(Path(m.__file__) for m in carving)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------- reading


def read(entry: Entry, make: Callable[[dict, dict[str, Any]], Any]) -> Any | None:
    """The dataset from a usable entry, `make(arrays, protocol)` building it as from decoded
    files, or None (a miss, mode "files", or an unusable entry, which is then removed)."""
    if entry.mode != "use":
        return None
    opened = _open(entry)
    if isinstance(opened, str):
        if opened == "missing":
            return None
        reason = opened
    else:
        arrays, protocol, fingerprint = opened
        try:
            data = make(arrays, protocol)
        except UserError as exc:
            reason = f"its arrays fail the dataset checks ({exc})"
        else:
            if data.fingerprint == fingerprint:
                log.info("decoded cache hit: %s", entry.path)
                return data
            reason = "its pixels differ from the fingerprint recorded when it was written"
    log.warning("decoded cache %s is unusable: %s; decoding the files instead", entry.path, reason)
    shutil.rmtree(entry.path, ignore_errors=True)
    return None


def _open(entry: Entry) -> tuple[dict, dict[str, Any], str] | str:
    """({split: SplitArrays with memory-mapped images}, protocol, fingerprint), or why not."""
    meta_path = entry.path / META
    if not meta_path.is_file():
        return "missing"  # also a folder whose writer died before meta.json (written last)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("identity") != entry.identity:
            return "made for other files or settings"
        arrays = {}
        for split in SPLITS:
            info = meta["splits"][split]
            for kind in ("images", "labels"):
                file = entry.path / f"{split}.{kind}.npy"
                if file.stat().st_size != info[kind]["bytes"]:
                    return f"corrupt ({file.name} has the wrong size)"
            # copy-on-write map: pages stay the page cache's until written (nothing writes them),
            # and the array is writable, so torch.from_numpy takes it without a warning or a copy
            images = np.load(entry.path / f"{split}.images.npy", mmap_mode="c", allow_pickle=False)
            labels = np.load(entry.path / f"{split}.labels.npy", allow_pickle=False)
            paths = json.loads((entry.path / f"{split}.paths.json").read_text(encoding="utf-8"))
            for kind, array in (("images", images), ("labels", labels)):
                if [list(array.shape), str(array.dtype)] != [
                    info[kind]["shape"],
                    info[kind]["dtype"],
                ]:
                    return f"corrupt ({split}.{kind}.npy has shape {array.shape} {array.dtype})"
            if len(paths) != len(images):
                return f"corrupt ({split}.paths.json lists {len(paths)} files)"
            groups_file = entry.path / f"{split}.groups.json"  # only where the data has groups
            groups = None
            if groups_file.is_file():
                groups = json.loads(groups_file.read_text(encoding="utf-8"))
                if len(groups) != len(images):
                    return f"corrupt ({split}.groups.json lists {len(groups)} groups)"
            # the readers' [N, H, W, C] as a view: `_check_split` transposes it back for free
            arrays[split] = SplitArrays(images.transpose(0, 2, 3, 1), labels, paths, groups)
        return arrays, meta["protocol"], meta["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"corrupt ({exc})"


# ---------------------------------------------------------------------------------- writing


def write(entry: Entry, data) -> bool:
    """Store a dataset decoded from `entry`'s files; True when an entry was written. Never fails
    the load: no space, a read-only cache or any OSError is a warning, and the run goes on."""
    if entry.mode == "off" or (entry.path / META).is_file():
        return False
    if entry.listed_ns - entry.newest_ns < SETTLE_NS:
        log.info("decoded cache not written: %s changed in the last seconds", entry.card.name)
        return False
    again = source_identity(entry.card, entry.root)[0]
    if again != entry.identity:  # a file changed while it was decoded: what was read is unknown
        log.warning("decoded cache not written: %s changed while it was read", entry.card.name)
        return False
    from bench.cache_dirs import check_cache_writable
    from bench.feature_cache import check_free_space, human_bytes, remove_stale_temp_dirs

    try:
        check_cache_writable(entry.path.parent)
    except UserError as exc:
        log.warning(
            "decoded cache not written: %s; %s is decoded from its files every time (or set %s=0 "
            "to silence this)",
            exc,
            entry.card.name,
            ENV_SWITCH,
        )
        return False
    # folders of writers killed mid-write, before the space check: what they held is free again
    remove_stale_temp_dirs(entry.path.parent)
    needed = sum(
        s.images.numel() * s.images.element_size()
        + s.labels.numel() * s.labels.element_size()
        + sum(len(p) + 4 for p in s.paths or ())
        for s in data.splits.values()
    )
    try:
        check_free_space(entry.path.parent, needed)
    except UserError:
        log.warning(
            "decoded cache not written: it needs about %s at %s and the disk has not that much "
            "free; %s is decoded from its files every time (free space, point $MEDPEFT_CACHE at a "
            "larger disk, or set %s=0 to silence this)",
            human_bytes(needed),
            entry.path.parent,
            entry.card.name,
            ENV_SWITCH,
        )
        return False
    try:
        _write_entry(entry, data)
    except OSError as exc:
        log.warning(
            "decoded cache not written (%s); %s is decoded from its files every time "
            "(set %s=0 to silence this)",
            exc,
            entry.card.name,
            ENV_SWITCH,
        )
        return False
    _prune(entry)
    return True


def _save(path: Path, array: np.ndarray) -> None:
    np.save(path, array, allow_pickle=False)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def _write_entry(entry: Entry, data) -> None:
    """Write into a temporary folder renamed into place, so no half entry is ever read."""
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.path.parent / f".{entry.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        splits = {}
        for split in SPLITS:
            part = data.splits[split]
            info = {}
            for kind, tensor in (("images", part.images), ("labels", part.labels)):
                array = tensor.numpy()  # images: [N, C, H, W], contiguous (see _check_split)
                file = tmp / f"{split}.{kind}.npy"
                _save(file, array)
                info[kind] = {
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                    "bytes": file.stat().st_size,
                }
            _write_json(tmp / f"{split}.paths.json", list(part.paths))
            if part.groups is not None:
                _write_json(tmp / f"{split}.groups.json", list(part.groups))
            splits[split] = info
        meta = {
            "identity": entry.identity,
            "fingerprint": data.fingerprint,
            "protocol": data.protocol,
            "splits": splits,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        _write_json(tmp / META, meta)  # last: a folder without it is never read
        if entry.path.exists():
            if (entry.path / META).is_file():
                return  # another process wrote the same entry meanwhile: keep theirs
            shutil.rmtree(entry.path, ignore_errors=True)  # a leftover without meta.json
        try:
            os.replace(tmp, entry.path)
        except OSError:
            if not (entry.path / META).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else a partial write


def _prune(entry: Entry) -> None:
    """Remove entries this one supersedes (same card, folder and code; other files): an edited
    dataset would otherwise leave a full copy of its pixels behind at every edit. Entries of other
    code are kept (two checkouts sharing $MEDPEFT_CACHE must not evict each other's). Temporary
    folders of killed writers are removed before each write (`write`)."""
    for other in entry.path.parent.iterdir():
        if other == entry.path or other.name.startswith("."):
            continue
        try:
            identity = json.loads((other / META).read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        same = ("format", "card", "folder", "code")
        if all(identity.get(k) == entry.identity[k] for k in same):
            shutil.rmtree(other, ignore_errors=True)


# --------------------------------------------------------------------------------- reporting


def describe(card: DatasetCard, root: Path) -> str | None:
    """One line for `bench data info`: whether a cache of the current files exists; None for
    formats that are not cached."""
    if not get_format(card.format).decodes_files:
        return None
    if not enabled():
        return f"off (${ENV_SWITCH}=0)"
    try:
        entry = lookup(card, root)
    except UserError as exc:
        return f"unknown: the files do not read ({exc})"
    assert entry is not None
    opened = _open(entry)
    if isinstance(opened, str):
        state = "none for the current files" if opened == "missing" else f"unusable: {opened}"
        return f"{state}; the next `bench run` decodes the images and writes one to {entry.path}"
    from bench.feature_cache import human_bytes

    size = sum(f.stat().st_size for f in entry.path.iterdir())
    written = json.loads((entry.path / META).read_text(encoding="utf-8")).get("written", "?")
    return (
        f"yes, {human_bytes(size)} at {entry.path} (written {written}); `bench run` "
        "memory-maps it instead of decoding"
    )
