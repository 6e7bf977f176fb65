"""Run records: one JSON file per cell, written atomically, read back tolerantly."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = 1
STATUSES = ("ok", "failed", "oom", "diverged")
# Cells with these statuses are finished: a rerun skips them unless --force. A `failed` cell is
# retried, since failures are usually environmental (a missing file, a killed worker).
FINISHED = ("ok", "oom", "diverged")


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


def write_record(results: Path, record: dict[str, Any]) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target."""
    results.mkdir(parents=True, exist_ok=True)
    path = record_path(results, record["run_id"])
    text = json.dumps(_clean(record), indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{record['run_id']}.", suffix=".tmp", dir=results)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when the file is not one of ours (corrupt or foreign JSON)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "run_id" not in data:
        return None
    return data


@dataclass
class RecordSet:
    records: list[dict[str, Any]]
    unreadable: list[Path]


def load_records(results: Path) -> RecordSet:
    """Every record in a folder; files that do not parse are listed, never overwritten."""
    records, bad = [], []
    if results.is_dir():
        for path in sorted(results.glob("*.json")):
            rec = read_record(path)
            if rec is None:
                log.warning("skipping %s: not a medpeft-bench record", path)
                bad.append(path)
            else:
                records.append(rec)
    return RecordSet(records, bad)


def finished(results: Path, run_id: str) -> dict[str, Any] | None:
    """The finished record for this run id, if there is one."""
    path = record_path(results, run_id)
    if not path.exists():
        return None
    rec = read_record(path)
    return rec if rec is not None and rec.get("status") in FINISHED else None
