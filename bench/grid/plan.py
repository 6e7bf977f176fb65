"""A grid made ready to run: the request checked, inputs read, cells expanded, everything that
can fail checked before the first cell trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.backbones import BackboneSource
from bench.catalog import data_root, get_card
from bench.config import CellConfig
from bench.grid.expand import Resolved, annotations, expand
from bench.grid.inputs import check_data, load_inputs, weights_id, weights_note
from bench.grid.preflight import check_foreign_files, preflight_builds
from bench.grid.request import GridRequest, resolve_device
from bench.precision import choose_precision
from bench.records import check_results_folder, finished


@dataclass
class Plan:
    cells: list[CellConfig]
    # data_key(cell) -> LoadedDataset, the few-shot view where the cell has shots (empty in a
    # dry run)
    datasets: dict[tuple, Any]
    source: BackboneSource
    notes: list[str] = field(default_factory=list)  # shown before the grid runs
    # run id -> fields added to that cell's record (how its hyperparameters were chosen)
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # dataset -> stored image size (None when unknown in a dry run): FPT+'s resolution rule
    data_sizes: dict[str, int | None] = field(default_factory=dict)
    request: GridRequest | None = None  # the checked request the plan came from

    def annotate(self, fields: dict[str, Any]) -> None:
        """Add `fields` to every cell's record (what holds for the whole grid)."""
        for cell in self.cells:
            self.annotations.setdefault(cell.run_id, {}).update(fields)


def plan(req: GridRequest, *, dry_run: bool = False, progress: bool = True) -> Plan:
    """Resolve and check the whole grid. Raises UserError before any training starts. A dry run
    reads no images and builds no model; its notes list the datasets that are missing."""
    req = req.checked()
    device = resolve_device(req.device)
    choice = choose_precision(req.precision, device)
    the_plan = _plan(req, device=device, precision=choice.resolved, dry_run=dry_run,
                     progress=progress)  # fmt: skip
    the_plan.annotate(choice.record_fields())  # which precision auto chose, and why
    check_foreign_files(the_plan.cells, req.results)
    if dry_run:  # where the real run would stop for want of weights, said now
        the_plan.notes += weights_note(req)
    else:
        # only the cells that will train: a finished grid builds nothing and notes no cache
        todo = [c for c in the_plan.cells if req.force or not finished(req.results, c.run_id)]
        the_plan.notes = preflight_builds(todo, the_plan.datasets, the_plan.source)
    return the_plan


def dry_plan(req: GridRequest, *, device: str, precision: str) -> Plan:
    """The cells a run on `device` would plan, planned here without reading images, building a
    model or touching a GPU (a Slurm login node, `bench status` on another machine). Its notes
    list the datasets that are missing."""
    return _plan(req.checked(), device=device, precision=precision, dry_run=True, progress=False)


def _plan(req: GridRequest, *, device: str, precision: str, dry_run: bool, progress: bool) -> Plan:
    cards = [get_card(name) for name in req.datasets]
    root = data_root(req.data_root)
    missing = check_data(cards, root, dry_run=dry_run)
    check_results_folder(req.results, write=not dry_run)
    inputs = load_inputs(req, cards, root, dry_run=dry_run, progress=progress)
    source = inputs.source
    resolved = Resolved(
        device=device,
        precision=precision,
        weights=str(source.weights) if source.weights else None,
        weights_id=weights_id(req, source),
        sizes=inputs.sizes,
        epochs={card.name: card.epochs for card in cards},
    )
    cells = expand(req, resolved)
    return Plan(cells=cells, datasets=inputs.datasets, source=source, notes=missing,
                annotations=annotations(req, cells), data_sizes=inputs.sizes, request=req)  # fmt: skip
