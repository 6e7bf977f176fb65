"""`bench tune` through a launcher: each stage of the search (a rung's trials, then the selected
configurations at every seed) runs as one launched grid (a Slurm job array, or fresh processes),
and the selection between stages runs here, from the records, in bench.tuning.run_tuning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench import claims
from bench.config import CellConfig
from bench.execute import GridOutcome, done_record
from bench.grid import GridRequest, Plan
from bench.launchers.options import LaunchOptions
from bench.launchers.processes import run_processes, subprocess_plan
from bench.launchers.slurm import slurm_plan, submit_cells
from bench.tuning_plan import Search, prepare


def launched_search(
    req: GridRequest, opts: LaunchOptions, *, progress: bool
) -> tuple[Plan, GridRequest, Search]:
    """The plan and search of `bench tune --launcher subprocess|slurm`, checked as a local tune
    checks its own before the first trial is launched: spaces, budget, --set/--space, and every
    distinct trial configuration built once."""
    if opts.kind == "subprocess":
        plan_ = subprocess_plan(req, opts, progress=progress)
    else:
        plan_ = slurm_plan(req, opts)
    req = plan_.request
    search = prepare(plan_, req)
    if not plan_.datasets:  # Slurm plans without reading the data: build without it
        check_builds(search.trials.cells, plan_)
    return plan_, req, search


def check_builds(cells: list[CellConfig], plan_: Plan) -> None:
    """Build each distinct (method, hyperparameters, classes, size) of `cells` once without
    weights, so a value the method refuses fails before a job is submitted, as
    bench.grid.preflight.preflight_builds does with the data in hand. Classes come from the
    dataset cards: a Slurm login node reads no images (and may have no GPU)."""
    from bench.catalog import get_card
    from bench.grid.preflight import build_key
    from bench.harness import build_model

    bare = dataclasses.replace(plan_.source, pretrained=False, weights=None)
    seen: set[tuple] = set()
    for cell in cells:
        classes = len(get_card(cell.dataset).classes)
        key = build_key(cell, classes)
        if key not in seen:
            seen.add(key)
            build_model(cell, bare, classes)


@dataclass
class LaunchedStages:
    """run_tuning's `stage`: one launched grid per call, returning the records its cells have.
    Without --wait (Slurm), a stage's jobs are submitted and the call returns at once; their
    groups then wait, and the same command run again selects from the records they leave."""

    req: GridRequest
    opts: LaunchOptions
    console: Any
    submitted: list[list[CellConfig]] = field(default_factory=list)  # each no-wait submission
    crashed: int = 0  # launched cells that ended without a record

    def __call__(self, stage_plan: Plan) -> GridOutcome:
        outcome = GridOutcome(records=[], ran=0, skipped=0)
        cells, busy = self._unclaimed(stage_plan.cells)
        outcome.busy = len(busy)
        for cell in busy:
            self.console.print(f"[yellow]running elsewhere[/] {cell.run_id}: left to its runner")
        if not cells:
            return outcome
        what = stage_text(cells)
        self.console.print(f"[cyan]stage[/] {what}")
        stage_plan = dataclasses.replace(stage_plan, cells=cells)
        if self.opts.kind == "subprocess":
            launched = run_processes(stage_plan, self.req, self.opts, console=self.console)
        else:
            launched = submit_cells(stage_plan, self.req, self.opts, console=self.console)
            have = {r["run_id"] for r in launched.records}
            todo = [c for c in cells if c.run_id not in have]
            if not self.opts.wait and todo:
                self.submitted.append(todo)
        self.crashed += launched.crashed
        outcome.records = launched.records
        outcome.ran, outcome.skipped = launched.ran, launched.skipped
        outcome.busy += launched.busy
        outcome.interrupted = launched.interrupted
        return outcome

    def _unclaimed(self, cells: list[CellConfig]) -> tuple[list[CellConfig], list[CellConfig]]:
        """(cells to launch, cells without a record that a live runner elsewhere holds): those
        are left to it, as the local search leaves them, rather than launched twice."""
        held = claims.current_claims(self.req.results, stale_after=self.req.stale_claim_s)
        busy = [
            c
            for c in cells
            if c.run_id in held and held[c.run_id].alive and done_record(self.req, c.run_id) is None
        ]
        return [c for c in cells if c not in busy], busy


def stage_text(cells: list[CellConfig]) -> str:
    """'3 trial(s) at 1 epoch(s)' or '2 final(s): the selected configurations at every seed'."""
    if all(c.role == "trial" for c in cells):
        epochs = sorted({c.epochs for c in cells})
        return f"{len(cells)} trial(s) at {'/'.join(map(str, epochs))} epoch(s)"
    return f"{len(cells)} final(s): the selected configurations at every seed"
