"""Cost measurement: parameter counts, per-phase peak memory, step timing and run environment."""

# Units: every *_mb value is MiB (2**20 bytes); every *_s value is seconds.

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "PeakMemory",
    "StepTimer",
    "Stopwatch",
    "count_params",
    "environment",
    "gpu_busy_processes",
    "param_report",
]

logger = logging.getLogger(__name__)

_MIB = float(2**20)
# NVML reports "not available" as the all-ones 64-bit value.
_NVML_VALUE_NOT_AVAILABLE = 2**64 - 1


# --------------------------------------------------------------------------- parameters


def _unique_params(module: nn.Module) -> Iterator[nn.Parameter]:
    # Dedupe by identity: tied weights appear under several names but are one tensor.
    seen: set[int] = set()
    for p in module.parameters(recurse=True):
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module``; a shared Parameter is counted once."""
    return sum(p.numel() for p in _unique_params(module) if p.requires_grad or not trainable_only)


def param_report(
    backbone_params: int, head_params: int, model: nn.Module, head: nn.Module | None
) -> dict[str, int | float]:
    """Parameter budget of an adapted model.

    ``backbone_params`` is the frozen backbone's size without the classifier head, counted
    before the PEFT method ran; it is the denominator of both percentages so methods are
    compared against the same base. ``head`` is the classifier module inside ``model`` (or
    None); its trainable parameters are excluded from ``trainable_params_no_head``.
    """
    if backbone_params <= 0:
        raise ValueError(f"backbone_params must be positive, got {backbone_params}")
    trainable = count_params(model, trainable_only=True)
    trainable_head = 0
    if head is not None:
        # Only head parameters that really live in `model` count, so a stale head object
        # (e.g. replaced by the method) cannot make the no-head number negative.
        in_model = {id(p) for p in _unique_params(model)}
        trainable_head = sum(
            p.numel() for p in _unique_params(head) if p.requires_grad and id(p) in in_model
        )
    trainable_no_head = trainable - trainable_head
    return {
        "backbone_params": int(backbone_params),
        "head_params": int(head_params),
        "total_params": count_params(model),
        "trainable_params": trainable,
        "trainable_params_no_head": trainable_no_head,
        "trainable_pct": 100.0 * trainable / backbone_params,
        "trainable_pct_no_head": 100.0 * trainable_no_head / backbone_params,
    }


# --------------------------------------------------------------------------- device helpers


def _as_device(device: torch.device | str | int | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = torch.device(f"cuda:{device}") if isinstance(device, int) else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        # Name the concrete GPU so results and NVML lookups refer to one device.
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sync_quietly(device: torch.device) -> None:
    # Used while an exception is already propagating (e.g. CUDA OOM): a second error from the
    # synchronize must not mask the original one.
    try:
        _sync(device)
    except Exception:
        logger.debug("synchronize failed during exception handling", exc_info=True)


# --------------------------------------------------------------------------- NVML

_nvml_module: ModuleType | None = None
_nvml_tried = False


def _nvml() -> ModuleType | None:
    """pynvml, initialised once; None when the package or the driver library is missing."""
    global _nvml_module, _nvml_tried
    if _nvml_tried:
        return _nvml_module
    _nvml_tried = True
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, ...
        logger.debug("NVML unavailable: %s", exc)
        return None
    _nvml_module = pynvml
    return pynvml


def _nvml_handle(nvml: ModuleType, torch_index: int) -> Any | None:
    """NVML handle for the GPU that torch calls ``cuda:<torch_index>``.

    torch's default device order (FASTEST_FIRST) and CUDA_VISIBLE_DEVICES remapping can both
    differ from NVML's PCI-bus order, so the PCI bus id is matched first; a bare index is
    only right under CUDA_DEVICE_ORDER=PCI_BUS_ID semantics.
    """
    if torch.cuda.is_available():
        try:
            props = torch.cuda.get_device_properties(torch_index)
            bus_id = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
            return nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        except Exception:
            logger.debug("NVML lookup by PCI bus id failed", exc_info=True)
    index = torch_index
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        parts = [v.strip() for v in visible.split(",")]
        if all(v.isdigit() for v in parts) and torch_index < len(parts):
            index = int(parts[torch_index])
    if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        logger.debug(
            "mapping cuda:%d to NVML index %d without PCI_BUS_ID order", torch_index, index
        )
    try:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        logger.debug("NVML lookup by index %d failed", index, exc_info=True)
        return None


def _nvml_processes(nvml: ModuleType, handle: Any) -> list[tuple[int, float | None]]:
    procs: dict[int, float | None] = {}
    for fn_name in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses",
    ):
        try:
            entries = getattr(nvml, fn_name)(handle)
        except Exception:
            logger.debug("%s failed", fn_name, exc_info=True)
            continue
        for e in entries:
            used = getattr(e, "usedGpuMemory", None)
            mb = None if used is None or used >= _NVML_VALUE_NOT_AVAILABLE else used / _MIB
            if e.pid not in procs or procs[e.pid] is None:
                procs[e.pid] = mb
    return list(procs.items())


def _nvml_snapshot(torch_index: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {"nvml_process_mb": None, "nvml_device_used_mb": None}
    nvml = _nvml()
    if nvml is None:
        return out
    handle = _nvml_handle(nvml, torch_index)
    if handle is None:
        return out
    try:
        out["nvml_device_used_mb"] = nvml.nvmlDeviceGetMemoryInfo(handle).used / _MIB
    except Exception:
        logger.debug("nvmlDeviceGetMemoryInfo failed", exc_info=True)
    pid = os.getpid()
    for p, mb in _nvml_processes(nvml, handle):
        if p == pid:
            out["nvml_process_mb"] = mb
            break
    else:
        # Typical inside containers: NVML reports host PIDs, which never equal os.getpid().
        logger.debug("own pid %d not among NVML processes on cuda:%d", pid, torch_index)
    return out


def gpu_busy_processes(device_index: int = 0) -> list[dict[str, Any]] | None:
    """Other processes using GPU ``device_index`` (torch numbering) as ``{pid, used_mb}`` dicts.

    Returns None when NVML is unavailable. Inside a PID namespace NVML lists host PIDs, so the
    calling process itself may appear in the list.
    """
    nvml = _nvml()
    if nvml is None:
        return None
    handle = _nvml_handle(nvml, device_index)
    if handle is None:
        return None
    own = os.getpid()
    return [{"pid": p, "used_mb": mb} for p, mb in _nvml_processes(nvml, handle) if p != own]


# --------------------------------------------------------------------------- host memory


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


def _current_rss_mb() -> float | None:
    status = _proc_status_kb()
    if "VmRSS" in status:
        return status["VmRSS"] / 1024.0
    try:
        import psutil

        return psutil.Process().memory_info().rss / _MIB
    except Exception:
        return None


def _ru_maxrss_mb() -> float:
    # ru_maxrss is kilobytes on Linux but bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MIB if sys.platform == "darwin" else peak / 1024.0


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
        self.rss_start_mb = _current_rss_mb()
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


# --------------------------------------------------------------------------- PeakMemory


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
        self.device = _as_device(device)
        self.result: dict[str, Any] = {}
        self._host = _HostPeak()
        self._alloc_start: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            # Finish earlier work first so its allocations are not attributed to this phase.
            _sync(self.device)
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
                _sync(self.device)
            else:
                _sync_quietly(self.device)
            idx = self.device.index
            self.result = {
                "device": str(self.device),
                "peak_allocated_mb": torch.cuda.max_memory_allocated(self.device) / _MIB,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(self.device) / _MIB,
                "allocated_start_mb": (self._alloc_start or 0) / _MIB,
                **_nvml_snapshot(idx if idx is not None else 0),
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


# --------------------------------------------------------------------------- timing


class StepTimer:
    """Wall-clock time per training/inference step, with the first ``warmup`` steps excluded.

    ``with timer.step(batch_size): ...`` times one step. On CUDA the device is synchronised
    before and after the step, so the time is the step's full wall time (host work, copies and
    kernels); the harness's steps already end in a host sync (``loss.item()``, ``.cpu()``), so
    this adds no stall of its own. A step that raises is not recorded.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu", warmup: int = 5) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.device = _as_device(device)
        self.warmup = warmup
        self._times: list[float] = []
        self._sizes: list[int] = []

    @contextlib.contextmanager
    def step(self, batch_size: int) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        yield
        _sync(self.device)
        self._times.append(time.perf_counter() - t0)
        self._sizes.append(int(batch_size))

    def first_step_excess_s(self) -> float:
        """How much longer the first step took than the median of the others (0 with fewer than
        two steps): one-off work such as `torch.compile`'s compilation."""
        if len(self._times) < 2:
            return 0.0
        return max(0.0, self._times[0] - float(np.median(self._times[1:])))

    def summary(self) -> dict[str, Any]:
        """Timing statistics over the steps after warm-up.

        ``throughput_img_s`` is total images / total seconds over the timed steps (not the
        median of per-step rates), so a ragged last batch is weighted by its size.
        ``step_time_p90_s`` uses linear interpolation (numpy default). When there are no more
        steps than ``warmup``, all steps are timed and ``warmup_excluded`` is False.
        """
        n = len(self._times)
        excluded = n > self.warmup
        start = self.warmup if excluded else 0
        times = np.asarray(self._times[start:], dtype=np.float64)
        images = int(sum(self._sizes[start:]))
        out: dict[str, Any] = {
            "steps_total": n,
            "steps_timed": int(times.size),
            "warmup_steps": start,
            "warmup_excluded": excluded,
            "images_timed": images,
            "time_timed_s": None,
            "step_time_median_s": None,
            "step_time_p90_s": None,
            "throughput_img_s": None,
        }
        if times.size == 0:
            return out
        if not excluded and self.warmup > 0:
            logger.warning(
                "only %d steps timed (warm-up %d): timing includes warm-up steps", n, self.warmup
            )
        total = float(times.sum())
        out.update(
            time_timed_s=total,
            step_time_median_s=float(np.median(times)),
            step_time_p90_s=float(np.percentile(times, 90)),
            throughput_img_s=images / total if total > 0 else None,
        )
        return out


class Stopwatch:
    """Wall-clock seconds per named phase: ``with sw.phase("train"): ...`` then ``sw.seconds``.

    Re-entering a phase name adds to its total. A phase that raises is still recorded.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu") -> None:
        self.device = _as_device(device)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            # Pending kernels belong to this phase; synchronise before reading the clock.
            if ok:
                _sync(self.device)
            else:
                _sync_quietly(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + (time.perf_counter() - t0)


# --------------------------------------------------------------------------- environment


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(directory: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while others use the checkout.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git_info(directory: Path) -> tuple[str | None, bool | None]:
    inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return None, None
    head = _git(directory, "rev-parse", "HEAD")  # None in a repository without commits
    status = _git(directory, "status", "--porcelain")
    sha = head.strip() if head else None
    dirty = None if status is None else bool(status.strip())
    return sha, dirty


def environment(repo: Path | None = None) -> dict[str, Any]:
    """Software/hardware description for a result record.

    Git fields describe ``repo`` or, by default, the checkout containing the ``bench``
    package; they are None outside a git work tree.
    """
    import bench

    directory = Path(repo) if repo is not None else Path(bench.__file__).resolve().parent
    sha, dirty = _git_info(directory)

    cuda_ok = torch.cuda.is_available()
    cpu_model = _cpu_model()
    if cuda_ok:
        device_names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        device_names = [cpu_model or "cpu"]
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        cudnn = None

    return {
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),  # which runner wrote the record (shared folders, launchers)
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch_version": _dist_version("torch"),
        "timm_version": _dist_version("timm"),
        "peft_version": _dist_version("peft"),
        "numpy_version": _dist_version("numpy"),
        "sklearn_version": _dist_version("scikit-learn"),
        "torch_cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "cuda_available": cuda_ok,
        "device_names": device_names,
        "torch_num_threads": torch.get_num_threads(),
        "git_sha": sha,
        "git_dirty": dirty,
        "medpeft_bench_version": getattr(bench, "__version__", None),
    }
