"""Peak memory of a phase: the CUDA allocator and NVML on a GPU, this process's RSS on the host.

Every phase also gets `own_mb`, the one memory figure the suite compares between methods:

- on a GPU, the most memory PyTorch allocated during the phase beyond what was allocated when
  the run started (weights, optimizer state, activations and cached features all count);
- on the host, the process's peak resident memory beyond its resident memory when the run
  started, taken after collecting garbage and returning freed heap pages to the operating system,
  so what earlier runs in the same process freed does not count. Where a loop passes a
  `StepMemory`, the figure is instead that of one steady step with its tensors counted one by
  one, as the GPU allocator counts them (`StepMemory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import sys
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.measure.device import MIB, as_device, sync, sync_quietly
from bench.measure.mps import MPS_SOURCE, mps_allocated_mb, mps_memory
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


# Plain words for `own_mb`, recorded as `own_definition` and repeated under tables.
MEMORY_DEFINITION = {
    "cuda": "the most GPU memory PyTorch allocated at once, beyond what was allocated before "
    "the run started",
    "cpu": "the most memory the process held at once, beyond what it held before the run "
    "started (libraries and data loaded, memory freed by earlier runs returned)",
    "cpu-step": "the memory the process held when a steady step began, beyond what it held "
    "before the run started (libraries and data loaded), plus the most that step's tensors "
    "took at once",
}


def memory_definition(device: torch.device | str) -> str:
    return MEMORY_DEFINITION["cuda" if as_device(device).type == "cuda" else "cpu"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, which hands the heap's free pages back to the OS; None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Collect garbage and return freed heap pages to the OS, so resident memory is what is in
    use. Without this, glibc keeps what an earlier run freed mapped, and a later run's resident
    memory starts (and peaks) above its own needs."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def warm_up_libraries() -> None:
    """Run a throwaway ViT block forward, backward and one AdamW step, once per process: the
    libraries' lazily loaded kernels, thread pools and buffers then exist before the first run's
    baseline is taken, instead of counting as that run's memory."""
    from timm.models.vision_transformer import Block

    block = Block(dim=64, num_heads=2)
    block(torch.randn(2, 17, 64, requires_grad=True)).sum().backward()
    torch.optim.AdamW(block.parameters()).step()
    del block
    release_freed_memory()


def memory_baseline(device: torch.device | str | int | None) -> float | None:
    """What a run's `own_mb` figures are measured from, taken when it starts: MB allocated by
    PyTorch on a GPU, else the process's resident MB once freed memory is returned."""
    dev = as_device(device)
    if dev.type == "cuda":
        sync(dev)
        return torch.cuda.memory_allocated(dev) / MIB
    if dev.type == "mps":
        return None  # MPS keeps no peak to measure own_mb from (bench.measure.mps)
    warm_up_libraries()
    release_freed_memory()
    return current_rss_mb()


_LIFETIME = "(process lifetime peak, not reset per phase)"


def _lifetime_peak_mb() -> tuple[float | None, str]:
    """(MB, source) of the process's lifetime peak resident memory: getrusage's ru_maxrss on
    Unix, the peak working set on Windows (which has no `resource` module); None when neither."""
    try:
        import resource
    except ImportError:
        resource = None  # type: ignore[assignment]
    if resource is not None:
        # ru_maxrss is kilobytes on Linux but bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mb = peak / MIB if sys.platform == "darwin" else peak / 1024.0
        return mb, f"ru_maxrss {_LIFETIME}"
    try:
        import psutil

        wset = getattr(psutil.Process().memory_info(), "peak_wset", None)
    except Exception:
        wset = None
    if wset is None:
        return None, "none (no peak resident memory on this system)"
    return wset / MIB, f"peak_wset {_LIFETIME}"


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
        release_freed_memory()
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
            peak_mb, source = _lifetime_peak_mb()
        return {"peak_rss_mb": peak_mb, "rss_start_mb": self.rss_start_mb, "source": source}


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of host tensor storages that ops create while active, and their peak;
    a storage leaves the count when it is freed. Outputs that share an input's storage (views,
    in-place and out= ops) allocate nothing and are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.finalize] = {}

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.device.type == "cpu"
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._tracked or storage.data_ptr() in inputs:
                continue
            nbytes = storage.nbytes()
            # PyTorch keeps a storage's Python object alive as long as the storage itself, so
            # the finalizer runs when the memory is freed.
            self._tracked[key] = weakref.finalize(storage, self._freed, key, nbytes)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


class StepMemory:
    """Host memory of one steady step of a loop, counted like the GPU allocator counts:
    ``with m.step(i): ...`` around every step i, then ``m.own_mb``. At step `at` (the second
    training step by default: gradients and optimizer state exist by then, so its peak is every
    later step's) it takes the resident memory beyond the run's baseline when the step starts,
    freed memory returned, plus the most that the step's own tensors held at once. The heap's
    high-water mark would instead count freed-but-kept blocks, which blur methods together.
    None on a GPU (its allocator peak is exact already) or when step `at` never ran; the count
    costs milliseconds per op, so the step should be one the timer leaves out as warm-up."""

    def __init__(self, device: torch.device | str, baseline_mb: float | None, *, at: int = 1):
        self.host = as_device(device).type == "cpu" and baseline_mb is not None
        self.baseline_mb = baseline_mb
        self.at = at
        self.own_mb: float | None = None

    @contextlib.contextmanager
    def step(self, index: int) -> Iterator[None]:
        if not self.host or index != self.at:
            yield
            return
        release_freed_memory()
        start = current_rss_mb()
        with _LiveTensors() as live:
            yield
        if start is not None and self.baseline_mb is not None:
            self.own_mb = max(0.0, start - self.baseline_mb) + live.peak / MIB

    def apply(self, phase: dict[str, Any]) -> None:
        """Put the step's figure into a `PeakMemory.result` as its `own_mb` (the phase-wide one
        stays as `phase_own_mb`)."""
        if self.own_mb is None:
            return
        phase["phase_own_mb"] = phase.get("own_mb")
        phase["own_mb"] = self.own_mb
        phase["own_definition"] = MEMORY_DEFINITION["cpu-step"]


class PeakMemory:
    """Peak memory of one phase: ``with PeakMemory(device) as pm: ...`` then read ``pm.result``.

    CUDA: ``peak_allocated_mb`` / ``peak_reserved_mb`` from the caching allocator (reset at
    enter), ``allocated_start_mb``, and NVML ``nvml_process_mb`` (this PID's usage incl. CUDA
    context) and ``nvml_device_used_mb`` as snapshots at phase end (None without NVML), plus
    the host ``host_peak_rss_mb``. CPU/other: ``peak_rss_mb`` and ``rss_start_mb`` of this
    process. Always: ``memory_source`` and ``device``. Peaks cover the whole process (not
    just this phase's allocations); subtract the *_start_mb value for a delta. With a
    ``baseline_mb`` (from `memory_baseline`), also ``own_mb``: the peak beyond it (see the
    module docstring), the figure the suite compares.
    """

    def __init__(
        self, device: torch.device | str | int | None = "cpu", *, baseline_mb: float | None = None
    ) -> None:
        self.device = as_device(device)
        self.baseline_mb = baseline_mb
        self.result: dict[str, Any] = {}
        self._host = _HostPeak()
        self._alloc_start: int | None = None
        self._mps_start: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            # Finish earlier work first so its allocations are not attributed to this phase.
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._alloc_start = torch.cuda.memory_allocated(self.device)
        elif self.device.type == "mps":
            sync(self.device)
            self._mps_start = mps_allocated_mb()
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
        elif self.device.type == "mps":
            sync(self.device) if exc_type is None else sync_quietly(self.device)
            self.result = {
                "device": str(self.device),
                **mps_memory(self._mps_start),
                "host_peak_rss_mb": host["peak_rss_mb"],
                "memory_source": f"{MPS_SOURCE}; host_peak_rss_mb: {host['source']}",
            }
        else:
            self.result = {
                "device": str(self.device),
                "peak_rss_mb": host["peak_rss_mb"],
                "rss_start_mb": host["rss_start_mb"],
                "memory_source": host["source"],
            }
        peak = self.result.get("peak_allocated_mb", self.result.get("peak_rss_mb"))
        # A host peak that could not be reset per phase is the process's lifetime peak, which
        # earlier runs set: no figure rather than a wrong one.
        per_phase = self.device.type == "cuda" or self._host.reset_ok
        if self.baseline_mb is not None and peak is not None and per_phase:
            self.result["own_mb"] = max(0.0, peak - self.baseline_mb)
            self.result["own_definition"] = memory_definition(self.device)
