"""Run records: one JSON file per cell, written atomically, read back tolerantly."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = 1
# `trial`: a hyperparameter-search trial that trained (or diverged, or ran out of memory: its
# `trial.outcome`) and was scored on validation only; it has no test metrics (bench.tuning).
STATUSES = ("ok", "failed", "oom", "diverged", "trial")
# Cells with these statuses are finished: a rerun skips them unless --force. A `failed` cell is
# retried, since failures are usually environmental (a missing file, a killed worker).
FINISHED = ("ok", "oom", "diverged", "trial")


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


# A temp file of a record being written (write_record's names: .<run id>.<random>.tmp); older
# than an hour, its writer died before the rename. Other hidden files are the user's.
_TEMP_AGE_S = 3600.0
_TEMP_NAME = re.compile(r"^\..+-[0-9a-f]{10,12}\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp(results: Path) -> int:
    """Delete record temp files whose writer died mid-write (older than an hour; a younger one
    may be another runner's write in progress); returns how many. They never count as records
    (not *.json), this only keeps the folder tidy."""
    return remove_old_temp(results, age_s=_TEMP_AGE_S, name_ok=_TEMP_NAME.match)


def remove_old_temp(folder: Path, *, age_s: float, name_ok=None) -> int:
    """Delete the `.*.tmp` files in `folder` older than `age_s` (and whose name `name_ok`
    accepts); returns how many. Files that vanish or cannot be removed are skipped."""
    removed = 0
    if not folder.is_dir():
        return 0
    now = time.time()
    for path in folder.glob(".*.tmp"):
        if name_ok is not None and not name_ok(path.name):
            continue
        try:
            if now - path.stat().st_mtime > age_s:
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when the file is not one of ours (corrupt or foreign JSON)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "run_id" not in data:
        return None
    # Right schema, wrong types (hand-edited, or another tool's file): refused here, so `bench
    # report` and `bench status` list it as unreadable instead of failing on it later.
    problem = _wrong_types(data)
    if problem is not None:
        log.warning("%s: %s", path, problem)
        return None
    return data


def _record_types() -> dict[str, str]:
    """Dotted key -> the type `bench report` needs there ("number": int or float, not bool; a
    trailing "?" also allows null). Parents come before their children."""
    types = {"run_id": "str", "status": "str", "error": "str?", "kind": "str?", "config": "dict"}
    types |= dict.fromkeys(("metrics", "params", "cost", "dataset"), "dict?")
    for key in ("dataset", "method", "backbone", "augment", "device", "precision"):
        types[f"config.{key}"] = "str"
    for key in ("seed", "split_seed", "epochs", "batch_size", "img_size"):
        types[f"config.{key}"] = "int"
    for key in ("lr", "weight_decay", "warmup_epochs", "grad_clip"):
        types[f"config.{key}"] = "number"
    types |= {"config.shots": "int?", "config.pretrained": "bool", "config.hparams": "dict"}
    types |= {"config.tuning": "dict?", "trial": "dict?", "tuning": "dict?"}
    types |= {"trial.outcome": "str", "trial.val_primary": "number?"}
    types |= {"metrics.primary": "number?", "metrics.primary_metric": "str?"}
    types |= {"metrics.test": "dict", "metrics.calibration": "dict?"}
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "map", "qwk", "ece", "nll"):
        types[f"metrics.test.{key}"] = "number?"
    for key in ("count", "confidence", "accuracy"):
        types[f"metrics.calibration.{key}"] = "list"
    for key in ("trainable_params", "trainable_pct", "trainable_pct_no_head"):
        types[f"params.{key}"] = "number?"
    types |= {"cost.wall_s": "number?", "cost.memory": "dict?", "cost.phases_s": "dict?"}
    types |= {"cost.phases_s.train": "number?", "cost.train_step": "dict?"}
    types |= {"cost.train_step.throughput_img_s": "number?"}
    for phase in ("train", "preload", "eval"):
        types[f"cost.memory.{phase}"] = "dict?"
        types[f"cost.memory.{phase}.peak_allocated_mb"] = "number?"
        types[f"cost.memory.{phase}.peak_rss_mb"] = "number?"
        types[f"cost.memory.{phase}.memory_source"] = "str?"
    return types


_RECORD_TYPES = _record_types()
# `bench profile` records, as bench.profile_report reads them.
_PROFILE_TYPES = {
    "run_id": "str", "status": "str", "error": "str?", "finished_at": "str?", "profile": "dict",
    "profile.method": "str", "profile.backbone": "str?", "profile.device": "str?",
    "profile.precision": "str?", "profile.img_size": "int?", "profile.batch_size": "int?",
    "profile.compile": "bool?", "profile.trainable_pct": "number?",
    "profile.train_memory_mb": "number?", "profile.inference_memory_mb": "number?",
    "profile.compile_s": "number?", "profile.step": "dict?", "profile.inference": "dict?",
    "profile.step.step_time_median_s": "number?", "profile.step.throughput_img_s": "number?",
    "profile.inference.throughput_img_s": "number?",
}  # fmt: skip


def _has_type(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if kind in ("int", "number") and isinstance(value, bool):
        return False
    return isinstance(value, {"str": str, "int": int, "number": (int, float), "bool": bool,
                              "dict": dict, "list": list}[kind])  # fmt: skip


def _wrong_types(data: dict[str, Any]) -> str | None:
    """What in a record has a type `bench report` cannot read, or None when nothing does."""
    types = _PROFILE_TYPES if data.get("kind") == "profile" else _RECORD_TYPES
    for dotted, kind in types.items():
        *parents, key = dotted.split(".")
        table: Any = data
        for name in parents:  # checked before (parents come first): a dict, None or absent
            table = table.get(name) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        if key not in table:
            if table is data and not kind.endswith("?"):
                return f"{dotted} is missing"
            continue
        if not _has_type(table[key], kind):
            return f"{dotted} is {type(table[key]).__name__}, expected {kind.rstrip('?')}"
    bins = (data.get("metrics") or {}).get("calibration") or {}
    lengths = {len(v) for k, v in bins.items() if k in ("count", "confidence", "accuracy")}
    values = [v for k in ("count", "confidence", "accuracy") for v in bins.get(k, [])]
    if len(lengths) > 1 or not all(_has_type(v, "number?") for v in values):
        return "metrics.calibration: bins of different lengths, or not numbers"
    return None


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
                # debug only: the commands that load records list these files themselves
                log.debug("skipping %s: not a medpeft-bench record", path)
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
