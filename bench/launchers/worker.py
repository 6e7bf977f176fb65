"""A launcher's worker: run one planned cell in this process, from its `cell.to_dict()`.

`python -m bench.launchers worker SPEC.json` is what the subprocess launcher starts; a Slurm job
calls `run_worker` in-process. A worker is a runner limited to its cell: the claims
(bench.claims) keep concurrent runners from running a cell twice."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.catalog import data_root, get_card
from bench.config import CellConfig
from bench.console import console, grid_progress
from bench.errors import UserError
from bench.execute import run_grid
from bench.grid import GridRequest, Plan, load_inputs
from bench.grid.inputs import weights_id
from bench.grid.preflight import preflight_builds
from bench.precision import choose_precision
from bench.records import check_results_folder
from bench.trackers import require_trackers


def cell_spec(plan: Plan, req: GridRequest, cell: CellConfig) -> dict[str, Any]:
    """What a worker needs to run one cell: the cell itself, its record's annotation, and the
    folders and weights it reads (paths absolute, so a worker anywhere finds the same ones)."""

    def absolute(path: Any) -> str | None:
        return str(Path(path).expanduser().resolve()) if path is not None else None

    spec = {
        "run_id": cell.run_id,
        "cell": cell.to_dict(),
        "annotation": plan.annotations.get(cell.run_id, {}),
        "results": absolute(req.results),
        "data_root": absolute(req.data_root),
        "weights": absolute(req.weights),
        "oom_retry": req.oom_retry,
        "force": req.force,
        "stale_claim_s": req.stale_claim_s,
        "artefacts": req.artefacts,
        "trackers": list(req.trackers),
        "tracker_dir": absolute(req.tracker_dir),
    }
    return json.loads(json.dumps(spec))  # fails here, not in the worker, on anything unserialisable


def worker_plan(spec: dict[str, Any], *, progress: bool) -> tuple[Plan, GridRequest]:
    """The spec's cell with its data and backbone, checked as the launcher checked its grid.
    UserError when the cell does not come out the same here (another suite version, other
    weights)."""
    cell = CellConfig(**spec["cell"])
    if cell.run_id != spec["run_id"]:
        raise UserError(f"cell {spec['run_id']} has run id {cell.run_id} in this suite version")
    choose_precision(cell.precision, cell.device)  # refuses a bf16 this job's GPU lacks
    few = cell.shots is not None
    req = GridRequest(
        methods=[cell.method],
        datasets=[cell.dataset],
        seeds=[cell.seed],
        backbone=cell.backbone,
        weights=spec["weights"],
        pretrained=cell.pretrained,
        shots=[cell.shots] if few else None,
        split_seeds=[cell.split_seed] if few else None,
        device=cell.device,
        precision=cell.precision,
        results=Path(spec["results"]),
        data_root=Path(spec["data_root"]) if spec["data_root"] else None,
        oom_retry=spec["oom_retry"],
        force=spec["force"],
        stale_claim_s=spec["stale_claim_s"],
        artefacts=spec.get("artefacts", True),  # a spec written before the option: on
        # .get: a Slurm job pickled by a version without trackers may run under this one
        trackers=tuple(spec.get("trackers", ())),
        tracker_dir=Path(spec["tracker_dir"]) if spec.get("tracker_dir") else None,
    )
    require_trackers(req.trackers)  # a worker's machine may lack what the launcher's had
    check_results_folder(req.results, write=True)
    root = data_root(req.data_root)
    inputs = load_inputs(req, [get_card(cell.dataset)], root, dry_run=False, progress=progress)
    if weights_id(req, inputs.source) != cell.weights_sha256:
        raise UserError(
            f"cell {cell.run_id}: the weights here are not the ones it was planned with"
        )
    notes = preflight_builds([cell], inputs.datasets, inputs.source)
    plan = Plan(cells=[cell], datasets=inputs.datasets, source=inputs.source, notes=notes,
                annotations={cell.run_id: spec["annotation"]}, request=req)  # fmt: skip
    return plan, req


def _tagged_run_cell(launcher: dict[str, Any]):
    """bench.harness.run_cell, with the launcher in the record's env (which GPU or Slurm job ran
    the cell; the worker's pid is there already, from bench.measure.environment)."""
    from bench.harness import run_cell

    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        record = run_cell(*args, **kwargs)
        record.setdefault("env", {})["launcher"] = launcher
        return record

    return run


def run_worker(spec: dict[str, Any], launcher: dict[str, Any], *, progress: bool = False) -> int:
    """Run a spec's cell in this process: 0 when it ran (whatever its status: the record says),
    2 when it does not plan here, 130 after Ctrl-C."""
    try:
        plan, req = worker_plan(spec, progress=progress)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with grid_progress(console(), enabled=progress) as events:
        outcome = run_grid(plan, req, events=events, run_cell=_tagged_run_cell(launcher))
    return 130 if outcome.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.launchers worker SPEC.json`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "worker":
        print("usage: python -m bench.launchers worker SPEC.json", file=sys.stderr)
        return 2
    _sigterm_as_ctrl_c()
    spec = json.loads(Path(args[1]).read_text())
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        return run_worker(spec, {"kind": "subprocess", "gpu": gpu})
    except KeyboardInterrupt:  # stopped before the grid began: no claim to release
        return 130


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (forwarded by the launcher, or sent by scancel to every process of the job) stops
    this worker as its first Ctrl-C does: the cell abandoned, its claim released. Only the first
    one: under scancel it comes from both, and a second Ctrl-C stops without releasing."""
    seen = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal seen
        if seen:
            return
        seen = True
        on_int = signal.getsignal(signal.SIGINT)
        if not callable(on_int):
            raise KeyboardInterrupt
        on_int(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, handle)
