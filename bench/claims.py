"""Claims: which runner is running which cell, so that runners sharing a results folder never run
a cell twice, and a claim left behind by a dead runner is taken over.

A claim is a small JSON file in `<results>/.claims/` (a subfolder, with a non-.json suffix, so it
is never read as a record) naming the process that holds it: host, pid, the process's start time
and the machine's boot id, and inside Slurm its job, restart count, step and task. Claims are never
rewritten (their holder only refreshes the mtime, a heartbeat), only created and deleted, and every
creation is an exclusive create (a hard link of a finished temp file, so a claim is never seen half
written). Taking over a dead claim does not delete and recreate it (two runners that both found it
dead could then both win): it creates the next generation, `<run_id>.<n>.claim`, and only the
runner whose exclusive create succeeds holds the cell. The newest generation is the claim.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

CLAIMS_DIR = ".claims"
SUFFIX = ".claim"
STALE_ENV = "MEDPEFT_STALE_CLAIM_HOURS"
DEFAULT_STALE_HOURS = 24.0
# How often a holder refreshes its claim's mtime: a claim from another machine, whose process
# cannot be checked, counts as dead once it has been silent for the stale timeout.
HEARTBEAT_S = 60.0
# A claim that does not parse is being written (the exclusive-create fallback writes after
# creating) if it is this young; older, it is the leftover of a crash.
_WRITING_S = 60.0
# Temp files of a claim being created; older than this, their writer is long gone.
_TEMP_AGE_S = 3600.0


def claims_dir(results: Path) -> Path:
    return results / CLAIMS_DIR


def stale_after_s(value: float | None = None) -> float:
    """Seconds after which a silent claim from another machine is dead: `value`, else
    $MEDPEFT_STALE_CLAIM_HOURS, else 24 h."""
    if value is not None:
        return value
    raw = os.environ.get(STALE_ENV)
    if not raw:
        return DEFAULT_STALE_HOURS * 3600
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise UserError(f"${STALE_ENV}={raw!r}: expected a positive number of hours")
    return hours * 3600


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (the name in parentheses may hold spaces)."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot), or None where /proc is missing: with
    the boot id it tells a live holder from a new process that got the dead holder's pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


@functools.cache
def this_process() -> dict[str, Any]:
    """Who this runner is, as a claim records it."""
    pid = os.getpid()
    ns = None
    with contextlib.suppress(OSError):
        # Containers on one kernel share the host name and boot id but not their pids.
        ns = os.readlink("/proc/self/ns/pid")
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "process_start": process_start(pid),
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_ns": ns,
        "slurm_job": _slurm_job(),
        **_slurm_task(),
    }


def _slurm_job() -> str | None:
    """This Slurm job (array task included), if any: a requeued job keeps it on another node."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def _slurm_task() -> dict[str, Any]:
    """Which run of its Slurm job, and which task of that run, this process is (None outside
    Slurm). Slurm counts requeues in SLURM_RESTART_COUNT (absent before the first), which tells
    an earlier run of the job from a task running beside this one; the step and task ids tell
    those tasks apart."""
    if _slurm_job() is None:
        return dict.fromkeys(("slurm_restart", "slurm_step", "slurm_procid", "slurm_localid"))
    return {
        "slurm_restart": _count(os.environ.get("SLURM_RESTART_COUNT")),
        "slurm_step": os.environ.get("SLURM_STEP_ID"),
        "slurm_procid": os.environ.get("SLURM_PROCID"),
        "slurm_localid": os.environ.get("SLURM_LOCALID"),
    }


def _count(value: Any) -> int:
    """A restart count as an env var or a claim holds it: absent (never requeued, or a claim
    from before counts were recorded) or unreadable reads as 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


def _earlier_run(info: dict[str, Any], me: dict[str, Any]) -> bool:
    """Whether a claim was made by an earlier run of this process's own Slurm job (preempted or
    out of time, then requeued, possibly on another node): that run is over. Another task of
    this same run (`srun -n 4`, runners started side by side in one batch script) is not: it is
    judged like any other process."""
    if not info.get("slurm_job") or info["slurm_job"] != me.get("slurm_job"):
        return False
    theirs, mine = _count(info.get("slurm_restart")), _count(me.get("slurm_restart"))
    if theirs != mine:
        return theirs < mine
    # One Slurm task (step and rank) runs on one node: the same task on another host is an
    # earlier run the count missed. (A claim from before these fields has no step and rank: a
    # task of a step leaves it to the heartbeat.)
    return info.get("host") != me["host"] and all(
        info.get(key) == me[key] for key in ("slurm_step", "slurm_procid")
    )


def _me() -> dict[str, Any]:
    # cached per pid: a forked child is another process
    me = this_process()
    if me["pid"] != os.getpid():
        this_process.cache_clear()
        me = this_process()
    return me


def holder_alive(info: dict[str, Any] | None, age_s: float, *, stale_after: float) -> bool:
    """Whether the runner that wrote a claim may still be running it. `age_s`: seconds since the
    claim was created or last refreshed."""
    if not isinstance(info, dict):
        return age_s < _WRITING_S
    me = _me()
    if _earlier_run(info, me):
        return False
    if info.get("host") != me["host"]:
        # Its process cannot be checked from here: trust it until it has been silent too long.
        return age_s < stale_after
    if info.get("boot_id") and me["boot_id"] and info["boot_id"] != me["boot_id"]:
        return False  # this machine rebooted since: every process of that boot is gone
    if info.get("pid_ns") != me["pid_ns"]:
        return age_s < stale_after  # another container: its pids are not ours to look up
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    started = info.get("process_start")
    now = fields[19] if fields and len(fields) > 19 else None
    # Same pid, other start time: the holder died and a new process got its pid.
    return not (started and now and started != now)


def _name(run_id: str, gen: int) -> str:
    return f"{run_id}{SUFFIX}" if gen == 0 else f"{run_id}.{gen}{SUFFIX}"


def parse_name(name: str) -> tuple[str, int] | None:
    """(run id, generation) of a claim file name, or None for anything else."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    stem = name[: -len(SUFFIX)]
    head, _, tail = stem.rpartition(".")
    # a run id ends in '-<hash>', so a purely numeric last part is a generation
    if head and tail.isdigit():
        return head, int(tail)
    return stem, 0


def _generations(folder: Path, run_id: str) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        parsed = parse_name(name)
        if parsed and parsed[0] == run_id:
            out.append((parsed[1], folder / name))
    return sorted(out)


def _read(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """(claim info or None if unparseable, seconds since its mtime); None if it is gone."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None, time.time() - mtime
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    return (info if isinstance(info, dict) else None), time.time() - mtime


def _create(path: Path, text: str) -> bool:
    """Create `path` holding `text` if nothing is there; False if something is."""
    tmp = path.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: the claim appears whole or not at all
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        # No hard links here (some network and FUSE file systems): an exclusive create, then
        # the write; a reader that meets the empty file gives it _WRITING_S to fill.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Claim:
    """A cell this runner holds; `release()` once its record is written (or it is abandoned).
    While held, a background thread refreshes the claim's mtime every HEARTBEAT_S, so runners on
    other machines see it alive however long the cell takes, whatever phase it is in."""

    path: Path
    run_id: str
    token: str
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        threading.Thread(target=self._beat, name=f"claim {self.run_id}", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Delete the claim if it is still ours (a runner that wrongly judged it dead may have
        superseded it; its claim is then left alone)."""
        self._stop.set()
        found = _read(self.path)
        if found is not None and (found[0] or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)


def try_claim(
    results: Path,
    run_id: str,
    *,
    about: dict[str, Any] | None = None,
    stale_after: float | None = None,
) -> Claim | None:
    """Claim a cell for this process; None when a live runner holds it. A dead runner's claim
    is taken over. `about` (dataset, method, seed...) is stored for `bench status`."""
    stale = stale_after_s(stale_after)
    folder = claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    info = {
        **_me(),
        "run_id": run_id,
        "token": token,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cell": about or {},
    }
    text = json.dumps(info, indent=2) + "\n"
    # Each pass that does not end follows a change another runner made in between (a claim
    # created, released or taken over); a bound keeps a pathological folder from spinning.
    for _ in range(1000):
        gens = _generations(folder, run_id)
        target = 0
        if gens:
            gen, path = gens[-1]
            found = _read(path)
            if found is None:
                continue  # released or superseded while we looked
            if holder_alive(*found, stale_after=stale):
                return None
            target = gen + 1
        path = folder / _name(run_id, target)
        if _create(path, text):
            for _gen, older in gens:
                older.unlink(missing_ok=True)  # dead generations, superseded by ours
            return Claim(path=path, run_id=run_id, token=token)
    raise RuntimeError(f"could not settle the claim of {run_id} in {folder}")


@dataclass
class ClaimState:
    """The current claim of one run id, as `bench status` shows it."""

    run_id: str
    path: Path
    info: dict[str, Any] | None
    alive: bool


def current_claims(results: Path, *, stale_after: float | None = None) -> dict[str, ClaimState]:
    """The newest claim of every claimed run id, and whether its holder is alive. Read only."""
    stale = stale_after_s(stale_after)
    folder = claims_dir(results)
    newest: dict[str, tuple[int, Path]] = {}
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for name in names:
        parsed = parse_name(name)
        if parsed and parsed[1] >= newest.get(parsed[0], (-1, None))[0]:
            newest[parsed[0]] = (parsed[1], folder / name)
    out = {}
    for run_id, (_gen, path) in sorted(newest.items()):
        found = _read(path)
        if found is None:
            continue
        out[run_id] = ClaimState(run_id, path, found[0], holder_alive(*found, stale_after=stale))
    return out


def tidy(results: Path, run_id: str, *, stale_after: float | None = None) -> None:
    """Remove a dead runner's claim on a cell that is already finished (it died between writing
    the record and releasing): take it over the usual way, then release it."""
    claim = try_claim(results, run_id, stale_after=stale_after)
    if claim is not None:
        claim.release()


def remove_stale_temp(results: Path) -> int:
    """Delete temp files of claim creations whose writer died (older than an hour); returns how
    many. Younger ones may belong to a runner creating a claim right now."""
    from bench.records import remove_old_temp

    return remove_old_temp(claims_dir(results), age_s=_TEMP_AGE_S)
