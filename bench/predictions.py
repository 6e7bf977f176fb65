"""A finished cell's predictions: `<run id>.predictions.npz` beside its record, the test and
validation logits and labels from which the report computes test-set bootstrap intervals, DeLong
AUC comparisons, per-class results and confusion matrices. Numpy only (the report reads it)."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bench.errors import UserError
from bench.records import LoadedRecord, read_small_file, write_atomic

log = logging.getLogger(__name__)

SUFFIX = ".predictions.npz"
# The key under which bench.harness.run_cell hands a finished cell's arrays to
# bench.records.save_record, which pops it and writes the file: it never reaches a record file.
PENDING = "pending_predictions"
# Far above any split's logits (50 000 images x 1 000 classes in float32 is 200 MB).
MAX_BYTES = 2**31


class Predictions(NamedTuple):
    """One split's predictions, in the split's order."""

    logits: np.ndarray  # float32 [N, C]
    labels: np.ndarray  # int64 [N]; multi-label: uint8 multi-hot [N, L]


def predictions_path(results: Path, run_id: str) -> Path:
    return results / f"{run_id}{SUFFIX}"


def _arrays(split: str, logits: Any, labels: Any) -> Predictions:
    """One split's arrays in the file's dtypes; ValueError when they do not fit together or a
    label would change in the conversion."""
    logits, raw = np.asarray(logits, dtype=np.float32), np.asarray(labels)
    if logits.ndim != 2 or raw.ndim not in (1, 2) or len(raw) != len(logits):
        raise ValueError(f"{split}: logits {logits.shape} and labels {raw.shape} do not match")
    if raw.ndim == 2 and raw.shape != logits.shape:
        raise ValueError(f"{split}: multi-label labels {raw.shape} are not shaped like the logits")
    whole = raw.dtype.kind in "biu" or (
        raw.dtype.kind == "f" and np.isfinite(raw).all() and (raw == np.round(raw)).all()
    )
    if not whole or (raw.ndim == 2 and not np.isin(raw, (0, 1)).all()):
        raise ValueError(f"{split}: labels are not whole class indices or 0/1 multi-hot values")
    labels_out = raw.astype(np.int64 if raw.ndim == 1 else np.uint8)
    return Predictions(logits, labels_out)


def save_predictions(path: Path, splits: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Write each split's (logits, labels) to `path` as a compressed npz, whole or not at all
    (`<split>_logits`, `<split>_labels`); returns the entry the record keeps: the file's name,
    the images per split and the file's sha256."""
    arrays: dict[str, np.ndarray] = {}
    for split, (logits, labels) in splits.items():
        pred = _arrays(split, logits, labels)
        arrays[f"{split}_logits"], arrays[f"{split}_labels"] = pred
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    write_atomic(path, data)
    return {
        "file": path.name,
        "splits": {split: len(arrays[f"{split}_labels"]) for split in splits},
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def load_predictions(path: Path, *, sha256: str | None = None) -> dict[str, Predictions]:
    """Split -> its predictions, from a file `save_predictions` wrote (never unpickled). Given
    `sha256` (the record's), a file that is not the one the record names is refused too: a
    rerun killed between writing its predictions and its record leaves the old record beside
    the new file. UserError says what to do."""
    fix = f"rerun its cell with --force, or delete {path} to report without it"
    raw = read_small_file(path, MAX_BYTES)
    if raw is None:
        raise UserError(f"{path} cannot be read as a predictions file; {fix}")
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise UserError(f"{path} is not the predictions file its record names (sha256); {fix}")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(f"{path} is damaged ({exc}); {fix}") from exc
    splits = sorted(key.removesuffix("_logits") for key in stored if key.endswith("_logits"))
    pairs = {f"{split}_{part}" for split in splits for part in ("logits", "labels")}
    if not splits or set(stored) != pairs:
        raise UserError(f"{path} does not hold <split>_logits and <split>_labels pairs; {fix}")
    out = {}
    for split in splits:
        logits, labels = stored[f"{split}_logits"], stored[f"{split}_labels"]
        try:
            pred = _arrays(split, logits, labels)
        except ValueError as exc:
            raise UserError(f"{path}: {exc}; {fix}") from exc
        if logits.dtype != np.float32 or pred.labels.dtype != labels.dtype:
            raise UserError(f"{path}: {split} arrays are not float32 logits and int labels; {fix}")
        out[split] = pred
    return out


def write_pending(results: Path, record: dict[str, Any]) -> None:
    """Write the predictions a record carries under PENDING (none: nothing to do) and name the
    file in its `predictions` entry. When they cannot be written the entry says why instead
    (`file` null, `error`): the record is still saved, its metrics stand."""
    splits = record.pop(PENDING, None)
    if splits is None:
        return
    path = predictions_path(results, record["run_id"])
    try:
        record["predictions"] = save_predictions(path, splits)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning("%s: the predictions were not saved (%s)", path, why)
        record["predictions"] = {"file": None, "error": f"could not write {path.name}: {why}"}


def predictions_file(record: Mapping[str, Any]) -> Path | None:
    """The absolute path of the predictions file a record read by load_records names, when
    that file is there beside the record's file; None otherwise."""
    entry = record.get("predictions")
    if not isinstance(record, LoadedRecord) or not isinstance(entry, dict):
        return None
    if entry.get("file") != f"{record['run_id']}{SUFFIX}":  # its own name, never a path
        return None
    path = (record.path.parent / entry["file"]).absolute()
    return path if path.is_file() else None
