"""What `bench export` checks before it imports torch: that the run has a finished record, and
that the folder it would write is free or an earlier export. Torch-free."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.records import read_record, record_path

SPEC_FILE = "model.json"  # an export's description (bench.export)


def find_record(run_id: str, results: Path) -> dict[str, Any]:
    """The record of `run_id` in `results`; UserError saying how to find run ids otherwise."""
    record = read_record(record_path(results, run_id), run_id=run_id)
    if record is not None:
        return record
    ids = [p.stem for p in results.glob("*.json")] if results.is_dir() else []
    close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.6)
    hint = f" Similar: {', '.join(close)}." if close else ""
    raise UserError(
        f"no record of run {run_id!r} in {results}/: run ids are the record files' names without "
        f".json (`ls {results}/*.json`; `bench status --results {results}` summarises the "
        f"folder).{hint}"
    )


def finished_record(run_id: str, results: Path) -> dict[str, Any]:
    """The record of `run_id`, which must have finished: only then are its tensors saved."""
    record = find_record(run_id, results)
    if record.get("status") != "ok":
        raise UserError(
            f"run {run_id} is {record.get('status')!r}, not ok: only a finished run keeps what it "
            "trained (a trial keeps nothing; rerun a failed cell)"
        )
    return record


def out_folder(run_id: str, out: Path | None) -> Path:
    """Where the export of `run_id` goes: `out`, by default exports/RUN_ID."""
    return out if out is not None else Path("exports") / run_id


def check_out_folder(out: Path) -> None:
    """`out` may be written: absent, or an earlier export (which the new one replaces whole)."""
    if out.exists() and not (out / SPEC_FILE).is_file():
        raise UserError(f"{out} exists and is not an export; choose another --out")
