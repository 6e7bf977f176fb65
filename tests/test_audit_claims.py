"""Claims inside one Slurm job: runners side by side in one job (`srun -n`, several runners in one
batch script) respect each other's live claims, a requeued run takes over its earlier run's at
once; and SIGTERM to the subprocess launcher stops its workers instead of orphaning them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench import claims
from tests.conftest import (
    claim_files,
    claim_pids,
    dead_pid,
    grid_args,
    subprocess_env,
    wait_for,
    write_claim,
)

RUN_ID = "cell-s0-0123456789ab"
# This process's Slurm job unless a test says otherwise: job 5150, step 0, task 0 of the step.
JOB = {"SLURM_JOB_ID": "5150", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
SLURM_VARS = (*JOB, "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")
TASK_FIELDS = ("slurm_restart", "slurm_step", "slurm_procid", "slurm_localid")

# A runner holding one claim until killed; argv: results run_id. Prints whether it got it.
HOLDER = r"""
import sys, time
from pathlib import Path
from bench import claims

claim = claims.try_claim(Path(sys.argv[1]), sys.argv[2])
print("held" if claim is not None else "busy", flush=True)
time.sleep(120)
"""

# A runner's pass over a grid as run_grid makes it (claim, skip a cell whose result is there,
# run, write the result, release), all runners let go at once; argv: results go-file cells.
CLAIMER = r"""
import sys, time
from pathlib import Path
from bench import claims

results, go, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
for i in range(n):
    run_id = f"cell{i}-s0-0123456789ab"
    claim = claims.try_claim(results, run_id)
    if claim is None:
        print(f"busy {run_id}", flush=True)  # a live runner holds it
        continue
    try:
        done = results / f"{run_id}.done"
        if not done.exists():
            print(f"run {run_id}", flush=True)
            time.sleep(0.05)
            done.touch()
    finally:
        claim.release()
"""


@pytest.fixture
def in_job(monkeypatch):
    """Put this process (and the children it starts) in Slurm job 5150: `in_job(**env)` sets the
    Slurm variables (JOB, overridden by `env`) and returns this process as claims see it."""

    def enter(**env: str) -> dict:
        for var in SLURM_VARS:
            monkeypatch.delenv(var, raising=False)
        for var, value in {**JOB, **env}.items():
            monkeypatch.setenv(var, value)
        claims.this_process.cache_clear()
        return claims.this_process()

    yield enter
    monkeypatch.undo()  # the environment back first, so that nothing caches the job's
    claims.this_process.cache_clear()


def child_env(**env: str) -> dict[str, str]:
    """This process's environment (its Slurm job included) with `env` on top."""
    return {**subprocess_env(), **env}


def running(pid: int) -> bool:
    """Whether `pid` names a process that has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ----------------------------------------------------------------------- claims in one job


@pytest.mark.parametrize(
    "task",
    [{"SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, {}],
    ids=["srun -n 2", "two runners in one batch script"],
)
def test_a_live_runner_of_the_same_job_on_this_host_keeps_its_claim(tmp_path, in_job, task) -> None:
    """Another live runner of this very job on this host (another task of the step, or another
    process of the same task) keeps its claim; once it is dead, its claim is taken."""
    in_job()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), RUN_ID],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(**task),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (path,) = claim_files(tmp_path)
        before = path.read_bytes()
        assert claims.try_claim(tmp_path, RUN_ID) is None
        assert claims.current_claims(tmp_path)[RUN_ID].alive
        assert claim_files(tmp_path) == [path] and path.read_bytes() == before  # untouched
        info = json.loads(before)
        assert info["pid"] == holder.pid and info["slurm_job"] == "5150"
        procid = task.get("SLURM_PROCID", "0")
        assert {k: info.get(k) for k in TASK_FIELDS} == {
            "slurm_restart": 0, "slurm_step": "0", "slurm_procid": procid, "slurm_localid": procid,
        }  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    taken = claims.try_claim(tmp_path, RUN_ID)
    assert taken is not None
    taken.release()
    assert claim_files(tmp_path) == []


def test_same_job_claims_by_restart_count_then_host(tmp_path, in_job) -> None:
    """In a run of job 5150 requeued once: another task of this run on another node is trusted
    while its heartbeat is fresh, and taken once silent past the stale timeout; the earlier
    run's claims (count 0, or none recorded) are taken at once wherever they are, and so is a
    dead pid of this run on this host. A claim of another job is left to its heartbeat."""
    in_job(SLURM_RESTART_COUNT="1")
    node2 = {"host": "node-2", "pid": 1}
    cases = {
        "other task of this run": ({**node2, "slurm_procid": "3", "slurm_localid": "1"}, True),
        "other job": ({**node2, "slurm_job": "6000", "slurm_restart": 0}, True),
        "earlier run": ({**node2, "slurm_restart": 0}, False),
        "earlier run without counts": ({**node2, "slurm_procid": "3"}, False),
        "this task, on another node": (node2, False),  # a requeue the count missed
        "dead pid of this run": ({"pid": dead_pid(), "slurm_procid": "1"}, False),
    }
    for name, (info, alive) in cases.items():
        run_id = name.replace(" ", "-").replace(",", "") + "-s0-0123456789ab"
        path = write_claim(tmp_path, run_id, **info)
        if "without counts" in name:  # written by a bench from before these fields
            old = {k: v for k, v in json.loads(path.read_text()).items() if k not in TASK_FIELDS}
            path.write_text(json.dumps(old))
        assert claims.current_claims(tmp_path)[run_id].alive == alive, name
        claim = claims.try_claim(tmp_path, run_id)
        assert (claim is None) == alive, name
        if claim is not None:
            claim.release()
    # the other task's claim, silent for 2 h: held under the 24 h default, taken past 1 h
    path = claims.claims_dir(tmp_path) / "other-task-of-this-run-s0-0123456789ab.claim"
    old = time.time() - 2 * 3600
    os.utime(path, (old, old))
    assert claims.try_claim(tmp_path, "other-task-of-this-run-s0-0123456789ab") is None
    taken = claims.try_claim(tmp_path, "other-task-of-this-run-s0-0123456789ab", stale_after=3600)
    assert taken is not None and not path.exists()
    taken.release()


def test_a_claim_without_counts_is_not_presumed_dead_by_a_first_run(tmp_path, in_job) -> None:
    """A claim from before the restart count was recorded, on another node, seen by a task of a
    job that was never requeued: it may be another task running now, so its heartbeat decides."""
    in_job()
    path = write_claim(tmp_path, RUN_ID, host="node-2", pid=1)
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in TASK_FIELDS}
    path.write_text(json.dumps(old))
    assert claims.try_claim(tmp_path, RUN_ID) is None
    stale = time.time() - 2 * 3600
    os.utime(path, (stale, stale))
    taken = claims.try_claim(tmp_path, RUN_ID, stale_after=3600)
    assert taken is not None
    taken.release()


def test_runners_of_one_job_never_run_a_cell_twice(tmp_path, in_job) -> None:
    """Three runners of one job on this host (two tasks of `srun -n 2`, and a second runner of
    task 0 started beside it), let go together on the same cells: each cell runs exactly once."""
    in_job()
    results, go, cells = tmp_path / "results", tmp_path / "go", 12
    results.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(results), str(go), str(cells)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(SLURM_PROCID=procid, SLURM_LOCALID=procid),
        )
        for procid in ("0", "1", "0")
    ]
    try:
        # all of them started and waiting before the race
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    lines = [line.split() for out, _ in outputs for line in out.splitlines()]
    runs = Counter(run_id for kind, run_id in lines if kind == "run")
    assert runs == Counter(f"cell{i}-s0-0123456789ab" for i in range(cells)), runs
    assert any(kind == "busy" for kind, _ in lines)  # they did meet on a cell
    assert claim_files(results) == []


# ----------------------------------------------------------------- SIGTERM to the launcher


@pytest.mark.slow
def test_sigterm_to_the_subprocess_launcher_stops_its_worker(tmp_path, tiny_data_root) -> None:
    """SIGTERM (scancel, kill) to `bench run --launcher subprocess` mid-cell: the worker stops
    within seconds, releasing its claim, and the launcher exits 130 with no record written."""
    results = tmp_path / "results"
    # 500 epochs of full fine-tuning: a cell that would run for minutes
    args = grid_args(tiny_data_root, results, "--methods", "full", "--seeds", "0",
                     "--epochs", "500", "--launcher", "subprocess")  # fmt: skip
    log = tmp_path / "launcher.log"
    worker = None
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=subprocess_env())  # fmt: skip
    try:
        end = time.monotonic() + 120
        while not (workers := claim_pids(results) - {proc.pid}):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < end, "no worker claimed a cell"
            time.sleep(0.01)
        (worker,) = workers
        time.sleep(1.0)  # into its training
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not running(worker), timeout=10)
        assert proc.wait(timeout=30) == 130, log.read_text()
    finally:
        if worker is not None and running(worker):
            os.kill(worker, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "SIGTERM: stopping 1 worker(s)" in output and "interrupted" in output, output
    assert claim_files(results) == []  # the worker stopped cleanly: its claim released
    assert list(results.glob("*.json")) == []
