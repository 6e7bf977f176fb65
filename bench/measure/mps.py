"""Memory on Apple's MPS device, as far as `torch.mps` tells it: what is allocated now (no peak
counter exists, so a phase's peak and `own_mb` are not measured there)."""

from __future__ import annotations

from typing import Any

import torch

from bench.measure.device import MIB

MPS_SOURCE = (
    "torch.mps.current_allocated_memory at phase start and end, driver_allocated_memory at "
    "phase end (MPS keeps no peak: the phase's peak is not measured)"
)


def _reading_mb(name: str) -> float | None:
    """torch.mps.<name>() in MiB; None where this torch lacks it."""
    read = getattr(torch.mps, name, None)
    return read() / MIB if read is not None else None


def mps_allocated_mb() -> float | None:
    """Memory PyTorch's MPS tensors hold now; None where this torch cannot say."""
    return _reading_mb("current_allocated_memory")


def mps_memory(start_mb: float | None) -> dict[str, Any]:
    """A phase's MPS figures at its end, given its allocated memory at its start."""
    return {
        "mps_allocated_start_mb": start_mb,
        "mps_allocated_end_mb": mps_allocated_mb(),
        "mps_driver_allocated_mb": _reading_mb("driver_allocated_memory"),
    }
