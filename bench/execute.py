"""Running a planned grid: claim each cell, run it (retrying an out-of-memory cell at smaller
batches when asked), write its record atomically, release the claim. Ctrl-C abandons the cell in
progress cleanly. Progress goes out as events (`GridEvents`); this module prints nothing."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import claims
from bench.config import CellConfig
from bench.grid import GridRequest, Plan, data_key
from bench.interrupts import Interrupts
from bench.measure.device import empty_cache
from bench.records import finished, read_record, record_path, remove_stale_temp, save_record
from bench.trackers import CellTracking, Trackers

RunCell = Callable[..., dict[str, Any]]


class GridEvents(Protocol):
    """What a running grid reports; `bench.console.grid_progress` renders it as progress bars."""

    def grid_started(self, todo: int, skipped: int) -> None: ...
    def cell_started(self, cell: CellConfig) -> None: ...
    def cell_progress(self, cell: CellConfig, done: int, total: int, info: str) -> None: ...
    def cell_ended(self, cell: CellConfig) -> None: ...
    def cell_saved(self, record: dict[str, Any]) -> None: ...
    def cell_left(self, cell: CellConfig, why: str, record: dict[str, Any] | None) -> None:
        """Not run here. why: "busy" (a live runner holds it), "elsewhere" (another runner
        wrote its record during this pass), "foreign" (a file that is not a record appeared
        where its record goes)."""


class Quiet:
    """GridEvents that show nothing: the default for callers that want only the outcome."""

    def grid_started(self, todo: int, skipped: int) -> None:
        pass

    def cell_started(self, cell: CellConfig) -> None:
        pass

    def cell_progress(self, cell: CellConfig, done: int, total: int, info: str) -> None:
        pass

    def cell_ended(self, cell: CellConfig) -> None:
        pass

    def cell_saved(self, record: dict[str, Any]) -> None:
        pass

    def cell_left(self, cell: CellConfig, why: str, record: dict[str, Any] | None) -> None:
        pass


@dataclass
class GridOutcome:
    records: list[dict[str, Any]]
    ran: int
    skipped: int
    interrupted: bool = False
    busy: int = 0  # cells a live runner elsewhere holds: left to it, not run here


def _about(cell: CellConfig) -> dict[str, Any]:
    """What a claim says about its cell, for `bench status`."""
    keys = ("dataset", "method", "seed", "shots", "split_seed", "backbone")
    return {k: getattr(cell, k) for k in keys}


def _stamp(results: Path, run_id: str) -> tuple[int, int] | None:
    """Identity of the record file now (a rewrite is a new inode and mtime), None if absent."""
    try:
        st = record_path(results, run_id).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def done_record(req: GridRequest, run_id: str) -> dict[str, Any] | None:
    """The record that makes this cell finished for this request, if any."""
    rec = None if req.force else finished(req.results, run_id)
    if rec is not None and req.oom_retry and rec.get("status") == "oom":
        tried = rec.get("oom_retries") or [(rec.get("config") or {}).get("batch_size")]
        if tried[-1] != 1:
            return None  # --oom-retry asks for smaller batches than this record tried
    return rec


def _free_device_memory(device: str) -> None:
    """Drop what the failed attempt left (its traceback's frames hold tensors) before a retry."""
    gc.collect()
    empty_cache(device)


def run_with_oom_retry(
    run_cell: RunCell,
    cell: CellConfig,
    *args: Any,
    retry: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run a cell; with `retry`, an `oom` result is retried at half the batch size, down to 1.
    The record keeps the requested cell (config, run id) and lists the batch sizes tried in
    `oom_retries`; a cell that then trains says the one it used in `training.batch_size_used`."""
    record = run_cell(cell, *args, **kwargs)
    if not retry or record.get("status") != "oom":
        return record
    tried = [cell.batch_size]
    while record.get("status") == "oom" and tried[-1] > 1:
        _free_device_memory(cell.device)
        smaller = dataclasses.replace(cell, batch_size=max(1, tried[-1] // 2))
        tried.append(smaller.batch_size)
        record = run_cell(smaller, *args, **kwargs)
    record["run_id"] = cell.run_id
    record["config"] = cell.to_dict()
    record["oom_retries"] = tried
    if isinstance(record.get("training"), dict):
        record["training"]["batch_size_used"] = tried[-1]
    return record


def run_grid(
    plan: Plan,
    req: GridRequest,
    *,
    events: GridEvents | None = None,
    run_cell: RunCell | None = None,
    only: set[str] | None = None,
) -> GridOutcome:
    """Run every unfinished cell that no live runner holds; one failing cell never stops the
    grid. Each cell is claimed first (bench.claims), so runners sharing a results folder split
    the grid and a dead runner's cells are taken over. The first Ctrl-C abandons the cell in
    progress (no record, claim released) and returns interrupted; a second stops at once. A
    rerun continues with the missing cells. `run_cell`: bench.harness.run_cell unless given.
    `only`: run ids to restrict the grid to (a launcher's worker runs its own cells). A tracker
    (`req.trackers`) whose package is missing raises UserError here, before any cell runs."""
    trackers = Trackers(req.trackers, req.tracker_dir or req.results)
    if run_cell is None:
        from bench.harness import run_cell  # the harness (torch models) only when cells run
    if only is not None:
        plan = dataclasses.replace(plan, cells=[c for c in plan.cells if c.run_id in only])
    outcome = GridOutcome(records=[], ran=0, skipped=0)
    with Interrupts() as interrupts:
        grid = _Grid(plan, req, run_cell, outcome, interrupts, events or Quiet(), trackers)
        try:
            todo = grid.unfinished()
            grid.events.grid_started(len(todo), outcome.skipped)
            for cell in todo:
                grid.run(cell)
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome


@dataclass
class _Grid:
    """One pass over a grid: what `run_grid` needs while it claims and runs cells."""

    plan: Plan
    req: GridRequest
    run_cell: RunCell
    outcome: GridOutcome
    interrupts: Interrupts
    events: GridEvents
    trackers: Trackers
    # record file identity when the pass began, per cell to run: a change since means another
    # runner ran the cell during this pass
    seen: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stale = claims.stale_after_s(self.req.stale_claim_s)

    def unfinished(self) -> list[CellConfig]:
        """The cells to run; finished ones go to the outcome as skipped."""
        results = self.req.results
        with self.interrupts.critical():
            remove_stale_temp(results)
            claims.remove_stale_temp(results)
            claimed = claims.current_claims(results, stale_after=self.stale)
        todo = []
        for cell in self.plan.cells:
            # stamped before reading: a record another runner writes in between is then seen
            # as written during this pass, instead of being missed and the cell run twice
            stamp = _stamp(results, cell.run_id)
            done = done_record(self.req, cell.run_id)
            if done is None:
                todo.append(cell)
                self.seen[cell.run_id] = stamp
                continue
            self.outcome.records.append(done)
            self.outcome.skipped += 1
            if cell.run_id in claimed and not claimed[cell.run_id].alive:
                with self.interrupts.critical():
                    # its runner died after writing the record, before releasing the claim
                    claims.tidy(results, cell.run_id, stale_after=self.stale)
        return todo

    def written_meanwhile(self, run_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(whether another runner wrote this cell's record file during this pass, the record
        or None if the file is not one). Whatever its status, the cell had its attempt in this
        pass: a failed cell is not retried twice at once."""
        if _stamp(self.req.results, run_id) == self.seen[run_id]:
            return False, None
        return True, read_record(record_path(self.req.results, run_id), run_id=run_id)

    def run(self, cell: CellConfig) -> None:
        """Claim, run, record and release one cell (or leave it to the runner holding it)."""
        claim = None
        try:
            with self.interrupts.critical():
                claim = claims.try_claim(
                    self.req.results, cell.run_id, about=_about(cell), stale_after=self.stale
                )
                if claim is None:
                    self.outcome.busy += 1
                    self.events.cell_left(cell, "busy", None)
                    return
                changed, done = self.written_meanwhile(cell.run_id)
                if changed:
                    self.outcome.skipped += 1
                    if done is not None:
                        self.outcome.records.append(done)
                    self.events.cell_left(cell, "elsewhere" if done else "foreign", done)
                    return
            record = self._train(cell)
            record.update(self.plan.annotations.get(cell.run_id, {}))
            with self.interrupts.critical():
                save_record(self.req.results, record, artefacts=self.req.artefacts)
                self.outcome.records.append(record)
                self.outcome.ran += 1
                self.events.cell_saved(record)
        finally:
            if claim is not None:
                with self.interrupts.critical():
                    claim.release()

    def _train(self, cell: CellConfig) -> dict[str, Any]:
        with self.trackers.cell(cell.run_id, cell.to_dict()) as tracked:
            record = self._attempts(cell, tracked)
            tracked.end(record)
        return record

    def _attempts(self, cell: CellConfig, tracked: CellTracking) -> dict[str, Any]:
        """The cell run (and retried on oom when asked), its progress sent to the events and
        the trackers."""
        events = self.events
        # the epoch callback goes only where a tracker listens: a run_cell given to run_grid
        # need not take it
        listen = {"on_epoch": tracked.epoch} if tracked else {}

        def on_step(step: int, total: int, loss: float, epoch: int) -> None:
            info = f"epoch {epoch + 1}/{cell.epochs} loss {loss:.4f}"
            events.cell_progress(cell, step, total, info)
            tracked.step(loss, epoch)

        def on_preload(split: str, done: int, total: int) -> None:
            events.cell_progress(cell, done, total, f"preloading {split} features")

        events.cell_started(cell)
        try:
            return run_with_oom_retry(
                self.run_cell,
                cell,
                self.plan.datasets[data_key(cell)],
                self.plan.source,
                retry=self.req.oom_retry,
                on_step=on_step,
                on_preload=on_preload,
                **listen,
            )
        finally:
            events.cell_ended(cell)
