"""Peak memory of a phase: the CUDA allocator and NVML on a GPU, this process's RSS on the host."""

from __future__ import annotations

import resource
import sys
from types import TracebackType
from typing import Any

import torch

from bench.measure.device import MIB, as_device, sync, sync_quietly
from bench.measure.nvml import nvml_snapshot


def _proc_status_kb() -> dict[str, int]:
    """VmRSS/VmHWM (kB) from /proc/self/status; empty off Linux."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def current_rss_mb() -> float | None:
    """This process's resident set size now; None where neither /proc nor psutil tells."""
    status = _proc_status_kb()
    if "VmRSS" in status:
        return status["VmRSS"] / 1024.0
    try:
        import psutil

        return psutil.Process().memory_info().rss / MIB
    except Exception:
        return None


def _ru_maxrss_mb() -> float:
    # ru_maxrss is kilobytes on Linux but bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024.0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; True if it demonstrably worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # "5" resets VmHWM only (Linux >= 4.0); other values touch page bits.
    except OSError:
        return False
    status = _proc_status_kb()
    if "VmHWM" not in status or "VmRSS" not in status:
        return False
    # Some sandboxes accept the write but ignore it; then VmHWM stays above VmRSS.
    return status["VmHWM"] <= status["VmRSS"] + 1024


# Host phases currently open, so a nested phase's reset does not erase an outer phase's peak.
_ACTIVE_HOST: list[_HostPeak] = []


class _HostPeak:
    """Peak resident set size of this process over one phase."""

    def __init__(self) -> None:
        self.carried_kb = 0
        self.reset_ok = False
        self.rss_start_mb: float | None = None

    def start(self) -> None:
        status = _proc_status_kb()
        if "VmHWM" in status:
            for outer in _ACTIVE_HOST:
                outer.carried_kb = max(outer.carried_kb, status["VmHWM"])
        self.reset_ok = _reset_hwm()
        self.rss_start_mb = current_rss_mb()
        _ACTIVE_HOST.append(self)

    def stop(self) -> dict[str, Any]:
        if self in _ACTIVE_HOST:
            _ACTIVE_HOST.remove(self)
        status = _proc_status_kb()
        if self.reset_ok and "VmHWM" in status:
            peak_mb = max(status["VmHWM"], self.carried_kb) / 1024.0
            source = "VmHWM (reset per phase)"
        else:
            peak_mb = _ru_maxrss_mb()
            source = "ru_maxrss (process lifetime peak, not reset per phase)"
        return {"peak_rss_mb": peak_mb, "rss_start_mb": self.rss_start_mb, "source": source}


class PeakMemory:
    """Peak memory of one phase: ``with PeakMemory(device) as pm: ...`` then read ``pm.result``.

    CUDA: ``peak_allocated_mb`` / ``peak_reserved_mb`` from the caching allocator (reset at
    enter), ``allocated_start_mb``, and NVML ``nvml_process_mb`` (this PID's usage incl. CUDA
    context) and ``nvml_device_used_mb`` as snapshots at phase end (None without NVML), plus
    the host ``host_peak_rss_mb``. CPU/other: ``peak_rss_mb`` and ``rss_start_mb`` of this
    process. Always: ``memory_source`` and ``device``. Peaks cover the whole process (not
    just this phase's allocations); subtract the *_start_mb value for a delta.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu") -> None:
        self.device = as_device(device)
        self.result: dict[str, Any] = {}
        self._host = _HostPeak()
        self._alloc_start: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            # Finish earlier work first so its allocations are not attributed to this phase.
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._alloc_start = torch.cuda.memory_allocated(self.device)
        self._host.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        host = self._host.stop()
        if self.device.type == "cuda":
            if exc_type is None:
                sync(self.device)
            else:
                sync_quietly(self.device)
            idx = self.device.index
            self.result = {
                "device": str(self.device),
                "peak_allocated_mb": torch.cuda.max_memory_allocated(self.device) / MIB,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(self.device) / MIB,
                "allocated_start_mb": (self._alloc_start or 0) / MIB,
                **nvml_snapshot(idx if idx is not None else 0),
                "host_peak_rss_mb": host["peak_rss_mb"],
                "memory_source": (
                    "torch.cuda.max_memory_allocated/max_memory_reserved (reset per phase); "
                    "nvml_*: NVML snapshot at phase end; host_peak_rss_mb: " + host["source"]
                ),
            }
        else:
            self.result = {
                "device": str(self.device),
                "peak_rss_mb": host["peak_rss_mb"],
                "rss_start_mb": host["rss_start_mb"],
                "memory_source": host["source"],
            }
