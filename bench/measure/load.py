"""What else the machine was doing during a measured window: CPU load, busy neighbours, clocks,
other processes on the GPU, and a verdict on whether the window's timings were contended."""

from __future__ import annotations

import logging
import os
import time
from types import TracebackType
from typing import Any

import torch

from bench.measure.device import as_device
from bench.measure.nvml import gpu_activity, gpu_busy_processes

try:
    import psutil
except ImportError:  # a declared dependency, but a measurement must never fail for want of it
    psutil = None

logger = logging.getLogger(__name__)

# Others using a quarter of the machine's CPU time take cores, caches and memory bandwidth from
# the run: one busy neighbour on a 2-core machine made a linear probe 7x slower.
CONTENDED_OTHERS_SHARE = 0.25
# Without CPU times the load average says the same, coarsely: runnable threads beyond the run's
# own torch threads above half the CPUs.
CONTENDED_EXCESS_LOAD_PER_CPU = 0.5
# A neighbour is named from a tenth of one core; below that it is background (shells, daemons).
BUSY_PROCESS_MIN_CORES = 0.10
BUSY_PROCESSES_LISTED = 5
# The kernel counts CPU time in 10 ms ticks: over a shorter window a share is mostly rounding.
MIN_WINDOW_S = 0.2


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _system_times() -> tuple[float, float]:
    """(busy, total) CPU seconds over all CPUs since boot; idle and iowait are not busy, steal
    (a hypervisor's other guests) is."""
    t = psutil.cpu_times()
    # Linux counts guest time inside user and nice already.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - t.idle - getattr(t, "iowait", 0.0), total


def _own_times() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _process_times() -> dict[int, float]:
    """CPU seconds (user + system) of every process we may read, by pid, in one pass."""
    out = {}
    for p in psutil.process_iter(["cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:  # None: access denied
            out[p.pid] = t.user + t.system
    return out


def _name(pid: int) -> str | None:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None


def _cpu_freq_mhz() -> dict[str, float | None] | None:
    if psutil is None:
        return None
    try:
        f = psutil.cpu_freq()
    except (OSError, NotImplementedError, psutil.Error):
        return None
    if f is None:
        return None
    # 0 is how psutil reports a bound the platform does not expose.
    return {k: getattr(f, k) or None for k in ("current", "min", "max")}


class MachineLoad:
    """``with MachineLoad(device) as load: ...`` then ``load.result``: what else ran meanwhile.

    Reads counters at enter and exit only (a few ms each, no sampling thread), so
    ``others_cpu_share`` is exact over the window: the machine's busy CPU time less this
    process's and its descendants', over the CPU time there was. ``contended`` is None when
    nothing could be measured.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu") -> None:
        self.device = as_device(device)
        self.result: dict[str, Any] = {}
        self._start: dict[str, Any] = {}

    def __enter__(self) -> MachineLoad:
        self._start = {"loadavg": _loadavg(), "gpu": self._gpu_processes()}
        if psutil is not None:
            try:
                self._start |= {"system": _system_times(), "own": _own_times(),
                                "procs": _process_times()}  # fmt: skip
            except (OSError, psutil.Error):
                logger.debug("psutil could not read CPU times", exc_info=True)
        self._start["wall"] = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.perf_counter() - self._start["wall"]
        share, busy = self._cpu_use(wall) if "system" in self._start else (None, None)
        r: dict[str, Any] = {
            "wall_s": wall,
            "loadavg_start": self._start["loadavg"],
            "loadavg_end": _loadavg(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": _usable_cpus(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "others_cpu_share": share,
            "busy_processes": busy,
            "cpu_freq_mhz": _cpu_freq_mhz(),
            **self._gpu(),
        }
        r["contended"], r["contention_reason"] = _verdict(r)
        self.result = r

    def _cpu_use(self, wall: float) -> tuple[float | None, list[dict[str, Any]] | None]:
        """Other processes' share of the CPU time over the window, and the busiest of them."""
        if wall < MIN_WINDOW_S:
            return None, None
        try:
            busy1, total1 = _system_times()
            own1, procs1 = _own_times(), _process_times()
            # Descendants are the run's own work: torch.compile's compile workers, say.
            mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
        except (OSError, psutil.Error):
            logger.debug("psutil could not read CPU times", exc_info=True)
            return None, None
        busy0, total0 = self._start["system"]
        procs0 = self._start["procs"]
        used = {}
        for p, t in procs1.items():
            # A pid not seen at enter (or reused: its time went down) started within the window.
            before = procs0.get(p)
            used[p] = t - before if before is not None and t >= before else t
        own = own1 - self._start["own"] + sum(used[p] for p in mine - {os.getpid()} if p in used)
        total = total1 - total0
        share = min(1.0, max(0.0, (busy1 - busy0 - own) / total)) if total > 0 else None
        cores = {p: u / wall for p, u in used.items() if p not in mine}
        top = sorted((p for p, c in cores.items() if c >= BUSY_PROCESS_MIN_CORES),
                     key=cores.__getitem__, reverse=True)[:BUSY_PROCESSES_LISTED]  # fmt: skip
        return share, [{"pid": p, "name": _name(p), "core_share": cores[p]} for p in top]

    def _gpu_processes(self) -> dict[int, Any]:
        if self.device.type != "cuda":
            return {}
        return {p["pid"]: p for p in gpu_busy_processes(self.device.index or 0) or []}

    def _gpu(self) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(
            ("gpu_other_processes", "gpu_other_count", "gpu_utilization_pct", "gpu_sm_clock_mhz",
             "gpu_sm_clock_max_mhz")
        )  # fmt: skip
        if self.device.type != "cuda":
            return out
        index = self.device.index or 0
        activity = gpu_activity(index)
        if activity is None:  # no NVML: nobody could look
            return out
        # Seen at enter or at exit: a neighbour that left before the end still shared the GPU.
        seen = self._start["gpu"] | self._gpu_processes()
        # Under host pids (a container) NVML lists this process too, as someone else, once it
        # holds memory there (a context).
        ours = torch.cuda.is_initialized() and torch.cuda.memory_reserved(index) > 0
        hidden_self = ours and not activity["own_pid_listed"]
        return {
            "gpu_other_processes": list(seen.values()),
            "gpu_other_count": max(0, len(seen) - hidden_self),
            "gpu_utilization_pct": activity["utilization_pct"],
            "gpu_sm_clock_mhz": activity["sm_clock_mhz"],
            "gpu_sm_clock_max_mhz": activity["sm_clock_max_mhz"],
        }


def _verdict(r: dict[str, Any]) -> tuple[bool | None, str | None]:
    """(contended, why in plain words); (None, None) when nothing could be measured."""
    reasons = []
    share, load, cpus = r["others_cpu_share"], r["loadavg_end"], r["cpu_count"]
    if share is not None and share >= CONTENDED_OTHERS_SHARE:
        reasons.append(f"other processes used {100 * share:.0f} % of the CPUs")
    elif share is None and load is not None and cpus:
        excess = load - r["torch_threads"] > CONTENDED_EXCESS_LOAD_PER_CPU * cpus
        reasons += [f"load average {load:.1f} on {cpus} CPUs"] if excess else []
    gpu = r["gpu_other_count"]
    if gpu:
        reasons.append(f"{gpu} other process{'es' if gpu > 1 else ''} on the GPU")
    if not reasons and share is None and load is None and gpu is None:
        return None, None
    return bool(reasons), "; ".join(reasons) or None
