"""A results folder: one JSON record per cell, written atomically, read back by bench.record."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.claims import claims_dir
from bench.errors import UserError
from bench.record import is_record
from bench.record_types import wrong_types

log = logging.getLogger(__name__)

# Cells with these statuses are finished: a rerun skips them unless --force. A `failed` cell is
# retried, since failures are usually environmental (a missing file, a killed worker). `trial`:
# a search trial that trained (or diverged, or ran out of memory: its `trial.outcome`) and was
# scored on validation only; it has no test metrics (bench.tuning).
FINISHED = ("ok", "oom", "diverged", "trial")
# Cells without a usable result: `bench run` exits 1 when its grid has any.
FAILURES = ("failed", "oom", "diverged")


class RecordNotSaved(Exception):
    """A finished cell's record could not be written to the results folder; the message says
    where its content went instead."""


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every record parses with strict readers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def record_path(results: Path, run_id: str) -> Path:
    return results / f"{run_id}.json"


def record_text(record: dict[str, Any]) -> str:
    """A record as its file holds it."""
    return json.dumps(_clean(record), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_record(results: Path, record: dict[str, Any]) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target."""
    results.mkdir(parents=True, exist_ok=True)
    return write_atomic(record_path(results, record["run_id"]), record_text(record))


def save_record(results: Path, record: dict[str, Any], *, artefacts: bool = True) -> Path:
    """`write_record`, or, when the results folder cannot take it (a full disk, a folder gone
    read-only mid-grid), the record saved in the temp folder and `RecordNotSaved` raised: the
    grid stops, the trained cell's result is kept. The predictions a finished cell carries
    (bench.predictions.PENDING) and, unless `artefacts` is off, its trained tensors
    (bench.artefacts.PENDING) are written first, so a record never names a missing file."""
    # here, not at the top: both write with this module's write_atomic
    from bench.artefacts import PENDING, write_pending_artefacts
    from bench.predictions import write_pending

    trained = record.pop(PENDING, None)  # popped first: tensors never reach a record's text
    try:
        results.mkdir(parents=True, exist_ok=True)
        write_pending(results, record)
        write_pending_artefacts(results, record, trained, enabled=artefacts)
        return write_record(results, record)
    except OSError as exc:
        target = record_path(results, record["run_id"])
        spare = Path(tempfile.gettempdir()) / "medpeft-bench-unsaved" / target.name
        try:
            spare.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(spare, record_text(record))
            kept = f"its content is saved in {spare}: move it to {target}"
        except OSError:
            kept = f"its content follows; save it as {target}:\n{record_text(record)}"
        raise RecordNotSaved(
            f"could not write {target} ({exc.strerror or exc}); the grid stopped. {kept}, then "
            "run the same command again to continue"
        ) from exc


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `path` whole or not at all: a temp file beside it (`.<name>.<random>.tmp`), fsync,
    then rename over it. The file gets the mode the umask gives, like any file the user creates,
    so a group-shared folder stays usable by colleagues."""
    tmp = path.parent / f".{path.name.removesuffix('.json')}.{uuid.uuid4().hex[:8]}.tmp"
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# A temp file of a record, its predictions or its artefacts being written (write_atomic's and
# bench.artefacts.write_folder_atomic's names: .<run id>[.predictions.npz|.trainable.safetensors
# |.adapter].<random>.tmp); older than an hour, its writer died before the rename. Other hidden
# files are the user's.
_TEMP_AGE_S = 3600.0
_TEMP_NAME = re.compile(
    r"^\..+-[0-9a-f]{10,12}(\.predictions\.npz|\.trainable\.safetensors|\.adapter)?"
    r"\.[a-z0-9_]{8}\.tmp$"
)


def remove_stale_temp(results: Path) -> int:
    """Delete record temp files whose writer died mid-write (older than an hour; a younger one
    may be another runner's write in progress); returns how many. They never count as records
    (not *.json), this only keeps the folder tidy."""
    return remove_old_temp(results, age_s=_TEMP_AGE_S, name_ok=_TEMP_NAME.match)


def remove_old_temp(folder: Path, *, age_s: float, name_ok=None) -> int:
    """Delete the `.*.tmp` files and folders in `folder` older than `age_s` (and whose name
    `name_ok` accepts): what writers killed before their rename left. Returns how many. Entries
    that vanish or cannot be removed are skipped."""
    removed = 0
    if not folder.is_dir():
        return 0
    now = time.time()
    for path in folder.glob(".*.tmp"):
        if name_ok is not None and not name_ok(path.name):
            continue
        try:
            if now - path.lstat().st_mtime > age_s:
                if stat.S_ISDIR(path.lstat().st_mode):
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


# Records are a few kB (a tuned final with its trials some 100 kB); anything far larger is not one.
MAX_RECORD_BYTES = 16 * 2**20


def read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes; None for anything else. Opened
    non-blocking and checked after opening, so a FIFO, a device (a `/dev/zero` link) or a
    file swapped in between is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                return None
            data = f.read(limit + 1)
        except OSError:
            return None
    return data if len(data) <= limit else None


def read_record(path: Path, *, run_id: str | None = None) -> dict[str, Any] | None:
    """A record, or None when the file is not one of ours (corrupt or foreign JSON, not a
    regular file, over MAX_RECORD_BYTES) or, given `run_id`, is another cell's record."""
    raw = read_small_file(path, MAX_RECORD_BYTES)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        return None
    if not is_record(data):
        return None
    if run_id is not None and data["run_id"] != run_id:
        log.warning("%s holds the record of %s, not of %s", path, data["run_id"], run_id)
        return None
    # Right schema, wrong types (hand-edited, or another tool's file): refused here, so `bench
    # report` and `bench status` list it as unreadable instead of failing on it later.
    problem = wrong_types(data)
    if problem is not None:
        log.warning("%s: %s", path, problem)
        return None
    return data


class LoadedRecord(dict):
    """A record as `load_records` read it, and the file it came from: an attribute, never a key,
    so nothing that writes a record can carry it into a file."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        super().__init__(data)
        self.path = path


@dataclass
class RecordSet:
    """A results folder read. A record counts only from the file named for its run id
    (`<run id>.json`, where `bench run` writes and looks for it), so a run id counts once and
    `bench run`, `bench status` and `bench report` agree on which cells are done. `misplaced`:
    (file, run id) for records under another name (a copy, a backup, another cell's path),
    listed and not counted; `unreadable`: files that are not records."""

    records: list[dict[str, Any]]
    unreadable: list[Path]
    misplaced: list[tuple[Path, str]] = field(default_factory=list)

    def notes(self) -> list[tuple[Path, str]]:
        """(file, what it is) for every file not counted, for the commands that load records to
        list."""
        notes = [(path, "not a medpeft-bench record (left untouched)") for path in self.unreadable]
        counted = {r["run_id"] for r in self.records}
        for path, run_id in self.misplaced:
            if run_id in counted:
                notes.append((path, f"a copy of {run_id}.json (same run id), not counted"))
            else:
                notes.append((path, f"the record of {run_id} under another name, not counted: "
                                    f"rename it {run_id}.json to count it"))  # fmt: skip
        return notes


def load_records(results: Path) -> RecordSet:
    """Every record in a folder (each a LoadedRecord), each from the file named for its run id;
    files that are not records, or hold one under another name, are listed, never overwritten.
    Only `*.json` files are read: predictions files (`*.predictions.npz`) are no records."""
    out = RecordSet(records=[], unreadable=[])
    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        rec = read_record(path)
        if rec is None:
            # debug only: the commands that load records list these files themselves
            log.debug("skipping %s: not a medpeft-bench record", path)
            out.unreadable.append(path)
        elif path.name != f"{rec['run_id']}.json":
            out.misplaced.append((path, rec["run_id"]))
        else:
            out.records.append(LoadedRecord(rec, path))
    return out


def finished(results: Path, run_id: str) -> dict[str, Any] | None:
    """The finished record for this run id, if there is one (at its path and of this run id: a
    record of another cell sitting there is foreign, and `bench run` refuses to start)."""
    path = record_path(results, run_id)
    if not path.exists():
        return None
    rec = read_record(path, run_id=run_id)
    return rec if rec is not None and rec.get("status") in FINISHED else None


def check_results_folder(results: Path, *, write: bool) -> None:
    """The results folder is a folder; for a real run, one this process can write records and
    claims into (checked by writing, which also covers a read-only mount and a full disk)."""
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results} exists and is not a folder")
    if not write:
        return
    claims = claims_dir(results)
    if claims.exists() and not claims.is_dir():
        raise UserError(
            f"{claims} is a file; runners keep their claims in that folder: move the file away"
        )
    probe = results / f".write-check.{uuid.uuid4().hex[:8]}.tmp"
    # folders made only for the check are removed again: bad input later leaves nothing behind
    made = list(itertools.takewhile(lambda d: not d.exists(), [results, *results.parents]))
    try:
        results.mkdir(parents=True, exist_ok=True)
        # a record's size: a full disk fails here, not after training
        probe.write_bytes(b"0" * 4096)
    except OSError as exc:
        raise UserError(
            f"cannot write records in --results {results}: {exc.strerror or exc}; choose a "
            "writable folder with free space"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
            for folder in made:
                folder.rmdir()
