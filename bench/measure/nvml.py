"""NVML (pynvml), when present: the GPU memory of this process and of the others on a GPU, and
the energy the GPU drew."""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

import torch

from bench.measure.device import MIB

logger = logging.getLogger(__name__)

# NVML reports "not available" as the all-ones 64-bit value.
_NVML_VALUE_NOT_AVAILABLE = 2**64 - 1

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


def _nvml_and_handle(torch_index: int) -> tuple[ModuleType, Any] | None:
    """pynvml and the handle of the GPU torch calls ``cuda:<torch_index>``; None without either."""
    nvml = _nvml()
    if nvml is None:
        return None
    handle = _nvml_handle(nvml, torch_index)
    return None if handle is None else (nvml, handle)


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
            mb = None if used is None or used >= _NVML_VALUE_NOT_AVAILABLE else used / MIB
            if e.pid not in procs or procs[e.pid] is None:
                procs[e.pid] = mb
    return list(procs.items())


def nvml_snapshot(torch_index: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {"nvml_process_mb": None, "nvml_device_used_mb": None}
    found = _nvml_and_handle(torch_index)
    if found is None:
        return out
    nvml, handle = found
    try:
        out["nvml_device_used_mb"] = nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
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
    found = _nvml_and_handle(device_index)
    if found is None:
        return None
    nvml, handle = found
    own = os.getpid()
    return [{"pid": p, "used_mb": mb} for p, mb in _nvml_processes(nvml, handle) if p != own]


def _energy_mj(found: tuple[ModuleType, Any] | None) -> int | None:
    if found is None:
        return None
    nvml, handle = found
    try:
        return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except Exception:  # older than Volta, or the driver does not expose the counter
        logger.debug("nvmlDeviceGetTotalEnergyConsumption failed", exc_info=True)
        return None


class GpuEnergy:
    """Energy the GPU drew over a phase, from NVML's cumulative counter (millijoules since the
    driver loaded): ``with GpuEnergy(device) as e: ...`` then ``e.joules`` (None off CUDA, without
    NVML, or on GPUs without the counter). The counter is the whole board's: another process on
    the GPU adds its energy, which the record's busy-process list tells."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.joules: float | None = None
        self._found: tuple[ModuleType, Any] | None = None
        self._start: int | None = None

    def __enter__(self) -> GpuEnergy:
        if self.device.type == "cuda":
            self._found = _nvml_and_handle(self.device.index or 0)
            self._start = _energy_mj(self._found)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        if exc[0] is None:
            torch.cuda.synchronize(self.device)  # the phase's kernels drew the energy
        end = _energy_mj(self._found)
        if end is not None:
            self.joules = (end - self._start) / 1000.0


def gpu_activity(device_index: int = 0) -> dict[str, Any] | None:
    """GPU ``device_index``'s utilisation (%, NVML's last sample period) and SM clock now and at
    most (MHz), and whether NVML lists this process under its own pid; None without NVML, a
    figure None where the driver does not report it.

    ``own_pid_listed`` False while this process holds a context on the GPU means NVML reports
    host pids (a container): `gpu_busy_processes` then lists this process among the others.
    """
    found = _nvml_and_handle(device_index)
    if found is None:
        return None
    nvml, handle = found

    def ask(fn_name: str, *args: Any) -> Any:
        try:
            return getattr(nvml, fn_name)(handle, *args)
        except Exception:
            logger.debug("%s failed", fn_name, exc_info=True)
            return None

    rates = ask("nvmlDeviceGetUtilizationRates")
    return {
        "utilization_pct": None if rates is None else float(rates.gpu),
        "sm_clock_mhz": ask("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM),
        "sm_clock_max_mhz": ask("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_SM),
        "own_pid_listed": any(p == os.getpid() for p, _ in _nvml_processes(nvml, handle)),
    }
