"""The Slurm launcher: one job per cell through submitit, requeued on preemption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.console import cell_label, cell_line
from bench.errors import UserError
from bench.grid import GridRequest, Plan, dry_plan
from bench.grid.preflight import check_foreign_files
from bench.launchers.options import LaunchOptions
from bench.launchers.outcome import LaunchOutcome, cell_record, split_done
from bench.launchers.worker import cell_spec, run_worker
from bench.precision import choose_precision

SLURM_DIR = ".slurm"  # submitit's folder: pickles and job logs


class CellJob:
    """One Slurm job: run one cell's worker in-process. When Slurm preempts the job or its
    time runs out, submitit calls `checkpoint`, which requeues the same cell (the interrupted
    attempt leaves no record; its claim is released as the job exits)."""

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        import submitit

        job = submitit.JobEnvironment()
        code = run_worker(spec, {"kind": "slurm", "job_id": str(job.job_id)})
        if code == 2:
            raise RuntimeError(f"worker refused the cell {spec['run_id']} (see the job's log)")
        rec = cell_record(Path(spec["results"]), spec["run_id"])
        return {"run_id": spec["run_id"], "status": rec.get("status") if rec else None}

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


def _slurm_plan(req: GridRequest) -> Plan:
    """The grid as the jobs will run it, planned without touching a GPU here (a login node may
    have none) and without reading the data: device and precision are what the jobs get."""
    # Bad names fail before planning; the jobs' GPUs are not asked (each job refuses a bf16 its
    # GPU lacks: bench.launchers.worker).
    choice = choose_precision(req.precision, req.device, elsewhere=True)
    plan_ = dry_plan(req, device=req.device, precision=choice.resolved)
    plan_.annotate(choice.record_fields())
    if plan_.notes:  # a dry run's notes are the datasets it could not find
        raise UserError(f"{plan_.notes[0]}; nothing submitted")
    check_foreign_files(plan_.cells, req.results)
    return plan_


def slurm_parameters(opts: LaunchOptions) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for the jobs: one task on one node each, plus what
    --slurm-config adds (account, qos, memory, setup lines, other sbatch options)."""
    params: dict[str, Any] = {
        "name": "medpeft-bench",
        "timeout_min": opts.time_min,
        "gpus_per_node": opts.gpus_per_job,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if opts.partition is not None:
        params["slurm_partition"] = opts.partition
    if opts.max_concurrent is not None:
        params["slurm_array_parallelism"] = opts.max_concurrent
    return {**params, **opts.sbatch}


def run_slurm(req: GridRequest, opts: LaunchOptions, *, console: Any) -> LaunchOutcome:
    """Submit one job per unfinished cell as a job array; with `opts.wait`, wait and collect."""
    plan_ = slurm_plan(req, opts)
    return submit_cells(plan_, plan_.request, opts, console=console)


def slurm_plan(req: GridRequest, opts: LaunchOptions) -> Plan:
    """The grid as its jobs will run it: on a GPU when they get one, unless --device says."""
    if req.device == "auto":
        req = req.replace(device="cuda" if opts.gpus_per_job > 0 else "cpu")
    return _slurm_plan(req)


def submit_cells(
    plan_: Plan, req: GridRequest, opts: LaunchOptions, *, console: Any
) -> LaunchOutcome:
    """Submit the planned cells that have no record as one job array (see run_slurm); `req` is
    the plan's checked request."""
    import submitit  # optional: only Slurm users install it

    todo, done = split_done(req, plan_.cells)
    outcome = LaunchOutcome(records=list(done), skipped=len(done))
    if not todo:
        console.print(f"0 cells to submit, {len(done)} done")
        return outcome
    folder = req.results / SLURM_DIR
    executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
    executor.update_parameters(**slurm_parameters(opts))
    specs = [cell_spec(plan_, req, cell) for cell in todo]
    jobs = executor.map_array(CellJob(), specs)
    first = jobs[0].job_id.split("_")[0]
    console.print(
        f"{len(todo)} cell(s) submitted, {len(done)} done: job(s) {first}"
        + (f" (array of {len(jobs)})" if "_" in jobs[0].job_id else f" .. {jobs[-1].job_id}")
        + f" on {opts.cluster}"
        + (f" partition {opts.partition}" if opts.partition else "")
        + f", {opts.time_min} min, {opts.gpus_per_job} GPU(s) each"
        + (f", at most {opts.max_concurrent} at once" if opts.max_concurrent else "")
    )
    console.print(f"logs: {folder}/<job id>_<task>_log.out|err; `bench status` shows progress")
    if not opts.wait:
        return outcome
    for cell, job in zip(todo, jobs, strict=True):
        error = ""
        try:
            job.result()
        except KeyboardInterrupt:
            outcome.interrupted = True
            console.print(f"Ctrl-C: stopped waiting; the jobs go on (scancel {first} stops them)")
            return outcome
        except Exception as exc:  # the job failed: its log has the traceback
            error = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else repr(exc)
        rec = cell_record(req.results, cell.run_id)
        if rec is not None:
            outcome.records.append(rec)
            outcome.ran += 1
            console.print(cell_line(rec))
        else:
            outcome.crashed += 1
            console.print(
                f"[red]no record[/] {cell_label(cell.to_dict())}: job {job.job_id} {error}".rstrip()
            )
    return outcome
