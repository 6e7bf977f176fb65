"""What the launchers share: their outcome, and how they read what a worker left behind."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import CellConfig
from bench.execute import done_record
from bench.grid import GridRequest
from bench.records import read_record, record_path


@dataclass
class LaunchOutcome:
    records: list[dict[str, Any]]
    ran: int = 0
    skipped: int = 0
    crashed: int = 0  # workers that ended without a record (killed, crashed, refused)
    busy: int = 0  # cells a live runner elsewhere held: left to it
    interrupted: bool = False


def split_done(
    req: GridRequest, cells: list[CellConfig]
) -> tuple[list[CellConfig], list[dict[str, Any]]]:
    """(cells to run, finished records), by the same rule as the local runner."""
    todo, done = [], []
    for cell in cells:
        rec = done_record(req, cell.run_id)
        if rec is None:
            todo.append(cell)
        else:
            done.append(rec)
    return todo, done


def cell_record(results: Path, run_id: str) -> dict[str, Any] | None:
    """The cell's record as its worker left it, None if there is none."""
    return read_record(record_path(results, run_id), run_id=run_id)


def last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return ""
