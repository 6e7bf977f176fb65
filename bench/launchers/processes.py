"""The subprocess launcher: each cell in a fresh `python -m bench.launchers worker` process, one
per GPU with --gpus."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.console import cell_label, cell_line
from bench.grid import GridRequest, Plan, plan
from bench.launchers.options import LaunchOptions
from bench.launchers.outcome import LaunchOutcome, cell_record, last_line, split_done
from bench.launchers.worker import cell_spec

LAUNCH_DIR = ".launch"  # in the results folder: worker specs and logs (never read as records)
STOP_WAIT_S = 30.0  # after Ctrl-C or SIGTERM, how long children get to stop cleanly before SIGKILL


def run_subprocess(
    req: GridRequest, opts: LaunchOptions, *, console: Any, progress: bool
) -> LaunchOutcome:
    """Every unfinished cell in a fresh `python -m bench.launchers worker` process, one per GPU
    slot at a time (CUDA_VISIBLE_DEVICES per child), or one at a time on the planned device
    without --gpus. A child that dies leaves no record (a rerun runs its cell); the others go
    on. Ctrl-C, or SIGTERM (scancel, kill), stops every child cleanly (a second one kills them)
    and returns interrupted."""
    plan_ = subprocess_plan(req, opts, progress=progress)
    for note in plan_.notes:
        console.print(f"[cyan]note[/] {note}")
    return run_processes(plan_, plan_.request, opts, console=console)


def subprocess_plan(req: GridRequest, opts: LaunchOptions, *, progress: bool) -> Plan:
    """The grid as the children will run it, checked whole before any child starts."""
    if opts.gpus:
        req = req.replace(device="cuda")  # checked here: fails on one line without CUDA
    return plan(req, progress=progress)


def run_processes(
    plan_: Plan, req: GridRequest, opts: LaunchOptions, *, console: Any
) -> LaunchOutcome:
    """Run the planned cells that have no record, each in a fresh worker process (see
    run_subprocess); `req` is the plan's checked request."""
    todo, done = split_done(req, plan_.cells)
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
                proc, log = _start(cell_spec(plan_, req, cell), slot, folder)
                running[proc] = (cell, slot, log)
                on = f" on GPU {slot}" if slot is not None else ""
                console.print(
                    f"[{count}/{len(todo)}] started {cell_label(cell.to_dict())}{on} (pid {proc.pid})"
                )
            for proc in [p for p in running if p.poll() is not None]:
                cell, slot, log = running.pop(proc)
                free.append(slot)
                rec = cell_record(req.results, cell.run_id)
                if proc.returncode == 0 and rec is not None:
                    outcome.records.append(rec)
                    outcome.ran += 1
                    console.print(cell_line(rec))
                elif proc.returncode == 0:  # the worker found the cell claimed by a live runner
                    outcome.busy += 1
                    console.print(f"[yellow]running elsewhere[/] {cell_label(cell.to_dict())}")
                else:
                    outcome.crashed += 1
                    console.print(
                        f"[red]crashed[/] {cell_label(cell.to_dict())}: worker {proc.pid} "
                        f"{_exit_text(proc.returncode)}, no record (log: {log})"
                        + (f": {last_line(log)}" if proc.returncode > 0 else "")
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


def _start(spec: dict[str, Any], slot: str | None, folder: Path) -> tuple[subprocess.Popen, Path]:
    spec_path = folder / f"{spec['run_id']}.spec"
    spec_path.write_text(json.dumps(spec))
    log = folder / f"{spec['run_id']}.log"
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
