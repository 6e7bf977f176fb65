"""Launchers for `bench run`: `subprocess` runs each cell in a fresh process (one per GPU with
--gpus), `slurm` submits one job per cell through submitit. A worker is simply a runner limited
to its cell: the claims (bench.claims) already keep concurrent runners from running a cell twice.

`python -m bench.launchers worker SPEC.json` runs the cells a spec names (what the subprocess
launcher starts); the Slurm job callable runs the same worker in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError

LAUNCHERS = ("local", "subprocess", "slurm")
CLUSTERS = ("slurm", "local")  # local: submitit runs the jobs as processes here (tests, laptops)
# --slurm-config keys -> (type, CLI option); the CLI wins over the file
SLURM_KEYS: dict[str, tuple[type, str]] = {
    "partition": (str, "--partition"),
    "time": (int, "--time"),
    "gpus_per_job": (int, "--gpus-per-job"),
    "max_concurrent": (int, "--max-concurrent"),
    "cluster": (str, "--slurm-cluster"),
}
DEFAULT_TIME_MIN = 60
LAUNCH_DIR = ".launch"  # in the results folder: worker specs and logs (never read as records)
SLURM_DIR = ".slurm"  # submitit's folder: pickles and job logs
STOP_WAIT_S = 30.0  # after Ctrl-C or SIGTERM, how long children get to stop cleanly before SIGKILL
_GPU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.-]*$")  # an index, GPU-/MIG- UUID


@dataclass
class LaunchOptions:
    """How `bench run` runs its cells, checked before anything runs."""

    kind: str = "local"
    gpus: list[str] | None = None
    partition: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    gpus_per_job: int = 1
    max_concurrent: int | None = None
    cluster: str = "slurm"
    wait: bool = False


def launch_options(
    launcher: str,
    *,
    device: str = "auto",
    gpus: str | None = None,
    partition: str | None = None,
    time_min: int | None = None,
    gpus_per_job: int | None = None,
    max_concurrent: int | None = None,
    slurm_config: Path | None = None,
    slurm_cluster: str | None = None,
    wait: bool = False,
) -> LaunchOptions:
    """Check the launcher options together; a bad combination is one UserError line."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if gpus is not None and launcher != "subprocess":
        raise UserError(
            "--gpus needs --launcher subprocess (one cell per GPU on this machine); Slurm jobs "
            "get theirs with --gpus-per-job"
        )
    slurm_only = {
        "--partition": partition is not None,
        "--time": time_min is not None,
        "--gpus-per-job": gpus_per_job is not None,
        "--max-concurrent": max_concurrent is not None,
        "--slurm-config": slurm_config is not None,
        "--slurm-cluster": slurm_cluster is not None,
        "--wait": wait,
    }
    given = [flag for flag, present in slurm_only.items() if present]
    if given and launcher != "slurm":
        raise UserError(f"{given[0]} is a Slurm option; it needs --launcher slurm")
    if launcher == "subprocess":
        return LaunchOptions(kind="subprocess", gpus=_parse_gpus(gpus, device))
    if launcher == "local":
        return LaunchOptions()
    cli = {"partition": partition, "time": time_min, "gpus_per_job": gpus_per_job,
           "max_concurrent": max_concurrent, "cluster": slurm_cluster}  # fmt: skip
    merged = {**(_read_slurm_config(slurm_config) if slurm_config else {}),
              **{k: v for k, v in cli.items() if v is not None}}  # fmt: skip
    opts = LaunchOptions(
        kind="slurm",
        partition=merged.get("partition"),
        time_min=merged.get("time", DEFAULT_TIME_MIN),
        # a CPU grid asks for no GPU unless told
        gpus_per_job=merged.get("gpus_per_job", 0 if device == "cpu" else 1),
        max_concurrent=merged.get("max_concurrent"),
        cluster=merged.get("cluster", "slurm"),
        wait=wait,
    )
    if opts.time_min < 1:
        raise UserError(f"--time must be >= 1 (minutes), got {opts.time_min}")
    if opts.gpus_per_job < 0:
        raise UserError(f"--gpus-per-job must be >= 0, got {opts.gpus_per_job}")
    if opts.max_concurrent is not None and opts.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {opts.max_concurrent}")
    if opts.cluster not in CLUSTERS:
        raise UserError(f"--slurm-cluster {opts.cluster!r}: expected slurm or local")
    if device == "cpu" and opts.gpus_per_job > 0:
        raise UserError(
            f"--gpus-per-job {opts.gpus_per_job} with --device cpu: the GPUs would sit idle; "
            "drop one of them"
        )
    if opts.gpus_per_job == 0 and device == "cuda":
        raise UserError("--device cuda with --gpus-per-job 0: the jobs would have no GPU")
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--launcher slurm: no `sbatch` on this machine; submit from a Slurm login node, or "
            "add --slurm-cluster local to run the jobs here through submitit"
        )
    return opts


def _parse_gpus(gpus: str | None, device: str) -> list[str] | None:
    if gpus is None:
        return None
    if device == "cpu":
        raise UserError("--gpus with --device cpu: drop --gpus, or use --device cuda (or auto)")
    ids = [g.strip() for g in gpus.split(",")]
    if not all(_GPU_ID.match(g) for g in ids):
        raise UserError(f"--gpus {gpus!r}: expected GPU indices (or UUIDs) like 0,1,2,3")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpus {gpus!r}: a GPU is listed twice")
    return ids


def _read_slurm_config(path: Path) -> dict[str, Any]:
    """The TOML keys of SLURM_KEYS; anything else is refused with the valid keys."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover (Python 3.10)
        import tomli as tomllib

    if not path.is_file():
        raise UserError(f"--slurm-config {path}: no such file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--slurm-config {path}: not readable TOML ({exc})") from None
    for key, value in raw.items():
        if key not in SLURM_KEYS:
            raise UserError(
                f"--slurm-config {path}: unknown key {key!r}; valid: {', '.join(SLURM_KEYS)}"
            )
        kind, _ = SLURM_KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(
                f"--slurm-config {path}: {key} must be a{'n' if kind is int else ''} "
                f"{kind.__name__}, got {value!r}"
            )
    return raw


# ------------------------------------------------------------------------------ worker specs


def request_to_json(req: Any) -> dict[str, Any]:
    """A RunRequest as JSON (paths absolute, so a worker anywhere finds the same folders)."""
    out = {f.name: getattr(req, f.name) for f in dataclasses.fields(req)}
    for key in ("results", "data_root", "weights"):
        if out[key] is not None:
            out[key] = str(Path(out[key]).expanduser().resolve())
    out["dataset_lr"] = [[ds, m, lr] for (ds, m), lr in req.dataset_lr.items()]
    return json.loads(json.dumps(out))  # fails here, not in the worker, on anything unserialisable


def request_from_json(data: dict[str, Any]) -> Any:
    from bench.runner import RunRequest

    data = dict(data)
    data["results"] = Path(data["results"])
    if data["data_root"] is not None:
        data["data_root"] = Path(data["data_root"])
    data["dataset_lr"] = {(ds, m): lr for ds, m, lr in data["dataset_lr"]}
    return RunRequest(**data)


def cell_request(req: Any, cell: Any) -> Any:
    """The request narrowed to one cell, so that a worker reads one dataset and builds one
    model; it plans to the same run id (the worker checks)."""
    few = cell.shots is not None
    return dataclasses.replace(
        req,
        methods=[cell.method],
        datasets=[cell.dataset],
        seeds=[cell.seed],
        shots=[cell.shots] if few else None,
        split_seeds=[cell.split_seed] if few else None,
        sets={m: v for m, v in req.sets.items() if m == cell.method},
        device=cell.device,
        precision=cell.precision,
    )


def cell_spec(req: Any, cell: Any) -> dict[str, Any]:
    """What a worker needs to run one cell."""
    return {"request": request_to_json(cell_request(req, cell)), "run_ids": [cell.run_id]}


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
    """Run a spec's cells in this process: 0 when they ran (whatever their status: the record
    says), 2 when the request does not plan here, 130 after Ctrl-C."""
    from bench.console import console
    from bench.runner import plan, run_grid

    out = console()
    req = request_from_json(spec["request"])
    wanted = set(spec["run_ids"])
    try:
        plan_ = plan(req, progress=progress)
        missing = wanted - {c.run_id for c in plan_.cells}
        if missing:
            # e.g. another suite version, or a different GPU type's precision default
            raise UserError(f"cell(s) {', '.join(sorted(missing))} do not plan here")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcome = run_grid(
        plan_,
        req,
        console=out,
        progress=progress,
        run_cell=_tagged_run_cell(launcher),
        only=wanted,
    )
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


# ----------------------------------------------------------------------------- shared parts


@dataclass
class LaunchOutcome:
    records: list[dict[str, Any]]
    ran: int = 0
    skipped: int = 0
    crashed: int = 0  # workers that ended without a record (killed, crashed, refused)
    busy: int = 0  # cells a live runner elsewhere held: left to it
    interrupted: bool = False


def _split(req: Any, cells: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """(cells to run, finished records), by the same rule as the local runner."""
    from bench.runner import _done

    todo, done = [], []
    for cell in cells:
        rec = _done(req, cell.run_id)
        if rec is None:
            todo.append(cell)
        else:
            done.append(rec)
    return todo, done


def _record(results: Path, run_id: str) -> dict[str, Any] | None:
    from bench.records import read_record, record_path

    return read_record(record_path(results, run_id), run_id=run_id)


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return ""


# ------------------------------------------------------------------------- subprocess launcher


def run_subprocess(req: Any, opts: LaunchOptions, *, console: Any, progress: bool) -> LaunchOutcome:
    """Every unfinished cell in a fresh `python -m bench.launchers worker` process, one per GPU
    slot at a time (CUDA_VISIBLE_DEVICES per child), or one at a time on the planned device
    without --gpus. A child that dies leaves no record (a rerun runs its cell); the others go
    on. Ctrl-C, or SIGTERM (scancel, kill), stops every child cleanly (a second one kills them)
    and returns interrupted."""
    from bench.runner import _cell_line, _where, plan

    if opts.gpus:
        req.device = "cuda"  # checked here: fails on one line when this machine has no CUDA
    plan_ = plan(req, progress=progress)  # the whole grid checked before any child starts
    for note in plan_.notes:
        console.print(f"[cyan]note[/] {note}")
    todo, done = _split(req, plan_.cells)
    outcome = LaunchOutcome(records=list(done), skipped=len(done))
    slots: list[str | None] = list(opts.gpus) if opts.gpus else [None]
    where = (
        f"GPUs {','.join(opts.gpus)}" if opts.gpus else f"one at a time on {plan_.cells[0].device}"
    )
    console.print(
        f"{len(todo)} cell(s) to run in fresh processes ({where}), {len(done)} already done"
    )
    folder = req.results / LAUNCH_DIR
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
    queue = deque(todo)
    free = list(slots)
    running: dict[subprocess.Popen, tuple[Any, str | None, Path]] = {}
    count = 0
    terms: list[int] = []  # the SIGTERMs received
    restore = _note_sigterm(terms)
    try:
        while (queue or running) and not terms:
            while queue and free:
                cell, slot = queue.popleft(), free.pop(0)
                count += 1
                proc, log = _start(cell, slot, req, folder)
                running[proc] = (cell, slot, log)
                on = f" on GPU {slot}" if slot is not None else ""
                console.print(
                    f"[{count}/{len(todo)}] started {_where(cell.to_dict())}{on} (pid {proc.pid})"
                )
            for proc in [p for p in running if p.poll() is not None]:
                cell, slot, log = running.pop(proc)
                free.append(slot)
                rec = _record(req.results, cell.run_id)
                if proc.returncode == 0 and rec is not None:
                    outcome.records.append(rec)
                    outcome.ran += 1
                    console.print(_cell_line(rec))
                elif proc.returncode == 0:  # the worker found the cell claimed by a live runner
                    outcome.busy += 1
                    console.print(f"[yellow]running elsewhere[/] {_where(cell.to_dict())}")
                else:
                    outcome.crashed += 1
                    console.print(
                        f"[red]crashed[/] {_where(cell.to_dict())}: worker {proc.pid} "
                        f"{_exit_text(proc.returncode)}, no record (log: {log})"
                        + (f": {_last_line(log)}" if proc.returncode > 0 else "")
                    )
            time.sleep(0.05)
        if terms:
            outcome.interrupted = True
            _stop(list(running), console, signal.SIGTERM, terms)
    except KeyboardInterrupt:
        outcome.interrupted = True
        _stop(list(running), console, signal.SIGINT, terms)
    finally:
        restore()
    return outcome


def _note_sigterm(terms: list[int]) -> Callable[[], None]:
    """Until the returned function restores the old handler, SIGTERM (scancel, kill) is added to
    `terms` instead of ending this process: the launcher must stop its workers first, which run
    in sessions of their own and would otherwise run on, orphaned."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers; SIGTERM keeps its default
    old = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))

    def restore() -> None:
        # None: the old handler was not set from Python; the default is the closest
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)

    return restore


def _start(cell: Any, slot: str | None, req: Any, folder: Path) -> tuple[subprocess.Popen, Path]:
    spec_path = folder / f"{cell.run_id}.spec"
    spec_path.write_text(json.dumps(cell_spec(req, cell)))
    log = folder / f"{cell.run_id}.log"
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    with log.open("w") as out:
        # Its own session: the terminal's Ctrl-C reaches only this launcher, which stops the
        # children once each (a second signal to a runner would stop it without cleaning up).
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.launchers", "worker", str(spec_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc, log


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


def _stop(procs: list[subprocess.Popen], console: Any, signum: int, terms: list[int]) -> None:
    """Pass the launcher's Ctrl-C or SIGTERM on to each child once (it abandons its cell and
    releases the claim), wait up to STOP_WAIT_S; a second Ctrl-C or SIGTERM here (`terms`
    grows), or the wait running out, kills them."""
    if signum == signal.SIGINT:
        console.print(f"Ctrl-C: stopping {len(procs)} worker(s) (Ctrl-C again kills them)")
    else:
        console.print(f"SIGTERM: stopping {len(procs)} worker(s) (a second signal kills them)")
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
    seen = len(terms)
    try:
        end = time.monotonic() + STOP_WAIT_S
        while (
            time.monotonic() < end and len(terms) == seen and any(p.poll() is None for p in procs)
        ):
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ Slurm launcher


class CellJob:
    """One Slurm job: run one cell's worker in-process. When Slurm preempts the job or its
    time runs out, submitit calls `checkpoint`, which requeues the same cell (the interrupted
    attempt leaves no record; its claim is released as the job exits)."""

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        import submitit

        job = submitit.JobEnvironment()
        code = run_worker(spec, {"kind": "slurm", "job_id": str(job.job_id)})
        if code == 2:
            raise RuntimeError(f"worker refused the cell {spec['run_ids']} (see the job's log)")
        results = Path(spec["request"]["results"])
        rec = _record(results, spec["run_ids"][0])
        return {"run_id": spec["run_ids"][0], "status": rec.get("status") if rec else None}

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


def _slurm_plan(req: Any) -> Any:
    """The grid as the jobs will plan it, without touching a GPU here (a login node may have
    none) and without reading the data: device and precision are what the jobs get."""
    from bench.config import CellConfig
    from bench.runner import plan, resolve_precision

    target = req.device
    precision = resolve_precision(req.precision, target)  # bad names fail before planning
    here = dataclasses.replace(req, device="cpu", precision="fp32")
    plan_ = plan(here, dry_run=True, progress=False)
    req.sets = here.sets  # plan canonicalises --set method names
    if plan_.notes:  # a dry run's notes are the datasets it could not find
        raise UserError(f"{plan_.notes[0]}; nothing submitted")
    cells: list[CellConfig] = [
        dataclasses.replace(c, device=target, precision=precision) for c in plan_.cells
    ]
    return dataclasses.replace(plan_, cells=cells)


def run_slurm(req: Any, opts: LaunchOptions, *, console: Any) -> LaunchOutcome:
    """Submit one job per unfinished cell as a job array; with `opts.wait`, wait and collect."""
    import submitit

    if req.device == "auto":
        req.device = "cuda" if opts.gpus_per_job > 0 else "cpu"
    plan_ = _slurm_plan(req)
    todo, done = _split(req, plan_.cells)
    outcome = LaunchOutcome(records=list(done), skipped=len(done))
    if not todo:
        console.print(f"0 cells to submit, {len(done)} done")
        return outcome
    folder = req.results / SLURM_DIR
    executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
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
    executor.update_parameters(**params)
    specs = [cell_spec(req, cell) for cell in todo]
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
    from bench.runner import _cell_line, _where

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
        rec = _record(req.results, cell.run_id)
        if rec is not None:
            outcome.records.append(rec)
            outcome.ran += 1
            console.print(_cell_line(rec))
        else:
            outcome.crashed += 1
            console.print(
                f"[red]no record[/] {_where(cell.to_dict())}: job {job.job_id} {error}".rstrip()
            )
    return outcome


def launch(req: Any, opts: LaunchOptions, *, console: Any, progress: bool) -> LaunchOutcome:
    """Run the grid with a launcher other than `local`."""
    if opts.kind == "subprocess":
        return run_subprocess(req, opts, console=console, progress=progress)
    if opts.kind == "slurm":
        return run_slurm(req, opts, console=console)
    raise ValueError(f"launch() runs subprocess or slurm, not {opts.kind!r}")


if __name__ == "__main__":
    sys.exit(main())
