"""--device and --precision checked before torch is imported, where the answer is certain: a
Linux machine without an NVIDIA (/dev/nvidiactl), WSL (/dev/dxg) or ROCm (/dev/kfd) device node
has no GPU torch could see, only macOS has MPS, and CPU autocast is never used. The full rules
(bench.grid.resolve_device, bench.precision) run later and raise the same errors."""

from __future__ import annotations

import os
import sys

from bench.errors import UserError
from bench.option_values import DEVICES

GPU_NODES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def no_gpu_here() -> bool:
    """True when this machine certainly has no CUDA (or ROCm) device; False when it may have one."""
    return sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_NODES)


def unknown_device(device: str) -> UserError:
    return UserError(f"--device {device!r}: expected {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")


def no_cuda() -> UserError:
    return UserError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")


def no_mps() -> UserError:
    return UserError(
        "--device mps: torch has no MPS device here (Apple silicon, macOS 12.3+); use "
        "--device cpu or auto"
    )


def cpu_autocast(precision: str) -> UserError:
    return UserError(f"--precision {precision} is a GPU autocast; on CPU use fp32 (or auto)")


def check_device_options(device: str, precision: str) -> None:
    """Refuse the --device and --precision the full rules would refuse on this machine, where
    that is certain without torch; leave the rest to them."""
    if device not in DEVICES:
        raise unknown_device(device)
    if device == "mps" and sys.platform != "darwin":
        raise no_mps()
    on_cpu = device == "cpu" or (device == "auto" and no_gpu_here())
    if device == "cuda" and no_gpu_here():
        raise no_cuda()
    if on_cpu and precision in ("bf16", "fp16"):
        raise cpu_autocast(precision)
