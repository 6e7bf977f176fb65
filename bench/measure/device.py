"""The device a measurement refers to, waiting for its pending work, and the MiB unit."""

# Units: every *_mb value is MiB (2**20 bytes); every *_s value is seconds.

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

MIB = float(2**20)


def as_device(device: torch.device | str | int | None) -> torch.device:
    """The device meant: cpu for None, `cuda:<n>` for an int, a bare `cuda` made concrete."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(f"cuda:{device}") if isinstance(device, int) else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        # Name the concrete GPU so results and NVML lookups refer to one device.
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def sync(device: torch.device) -> None:
    """Wait for the device's pending work (a no-op on CPU), so a clock read covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def empty_cache(device: torch.device | str) -> None:
    """Hand the device allocator's cached free blocks back (a no-op on CPU), so a retry or the
    next cell starts from the memory in use."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def sync_quietly(device: torch.device) -> None:
    """`sync` while an exception is already propagating (e.g. CUDA OOM): a second error from
    the synchronize must not mask the original one."""
    try:
        sync(device)
    except Exception:
        logger.debug("synchronize failed during exception handling", exc_info=True)
