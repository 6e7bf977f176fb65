"""Mixed precision by device: which precision `auto` means on this machine (and why), the
autocast context, and fp16's loss scaler with the optimizer step it guards.

bf16 keeps float32's exponent range, so it trains without loss scaling; it runs on the tensor
cores of GPUs of compute capability 8.0 or newer (A100, RTX 30xx, H100). fp16 runs on the older
ones (V100 7.0, T4 and RTX 20xx 7.5) but its small range needs `torch.amp.GradScaler`
(Micikevicius et al. 2018, "Mixed Precision Training"): the loss is scaled up before backward,
gradients are unscaled before clipping, and a step whose gradients overflowed is skipped while
the scale is halved (PyTorch AMP docs, "Gradient clipping" recipe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.device_options import cpu_autocast
from bench.errors import UserError
from bench.option_values import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA GPUs with bf16 tensor cores
# A loss scale below 1 means fp16 gradients overflow even unscaled: the run has diverged, and
# the scaler would otherwise skip every remaining step without a word.
MIN_LOSS_SCALE = 1.0


@dataclass(frozen=True)
class PrecisionChoice:
    """What was asked (`requested`), what runs (`resolved`, the cell's precision) and why."""

    requested: str
    resolved: str
    reason: str

    def record_fields(self) -> dict[str, str]:
        """The record's fields saying how the cell's precision was chosen."""
        return {"precision_requested": self.requested, "precision_reason": self.reason}


def cuda_capability(device: str) -> tuple[int, int] | None:
    """The compute capability of the CUDA device `device` names; None when torch sees no GPU
    here (a Slurm login node planning jobs for GPUs it cannot query)."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device).index)
    return major, minor


def choose_precision(precision: str, device: str, *, elsewhere: bool = False) -> PrecisionChoice:
    """Resolve `--precision` for `device` (a resolved device: cpu, mps, cuda or cuda:N);
    `elsewhere`: the cells run on another machine (Slurm jobs), whose GPU cannot be asked here.

    auto: bf16 on a CUDA GPU with bf16 tensor cores, fp16 (with loss scaling) on an older one,
    bf16 when no GPU is visible to check (planning elsewhere: the job refuses bf16 if its GPU
    lacks it), fp32 on MPS (torch's MPS autocast covers fewer ops than CUDA's; fp16 is there
    to ask for) and on CPU (CPU autocast is slow and not what a GPU would measure).
    An explicit precision the device cannot run is refused with what to use instead."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    kind = device.split(":")[0]  # not torch.device(): a bad name must not raise its RuntimeError
    if kind == "cuda":
        return _choose_cuda(precision, device, None if elsewhere else cuda_capability(device))
    if precision == "auto":
        why = {
            "mps": "mps runs fp32 (its autocast covers fewer ops); --precision fp16 tries it",
            "cpu": "cpu runs fp32 (CPU autocast is slow and not what a GPU would measure)",
        }.get(kind, f"{kind} runs fp32")
        return PrecisionChoice("auto", "fp32", f"auto: {why}")
    if precision == "fp32":
        return PrecisionChoice("fp32", "fp32", "asked for")
    if kind == "mps" and precision == "fp16":
        if torch.amp.is_autocast_available("mps"):
            return PrecisionChoice("fp16", "fp16", "asked for")
        raise UserError("--precision fp16 on mps: this torch has no MPS autocast; use fp32")
    if kind == "mps":  # MPS bf16 needs macOS 14 and a recent torch: not a path the suite tests
        raise UserError("--precision bf16 runs on CUDA GPUs; on mps use fp16 or fp32 (or auto)")
    raise cpu_autocast(precision)


def _choose_cuda(
    precision: str, device: str, capability: tuple[int, int] | None
) -> PrecisionChoice:
    if capability is None:
        if precision == "auto":
            return PrecisionChoice(
                "auto", "bf16", "auto: the GPU the cells run on cannot be asked here; bf16 "
                "assumed (compute capability 8.0+); pass --precision fp16 for older GPUs (V100, T4)"
            )  # fmt: skip
        return PrecisionChoice(precision, precision, "asked for")
    cc = f"compute capability {capability[0]}.{capability[1]}"
    # By the named device's capability, not torch.cuda.is_bf16_supported(): that one answers
    # for the current device only and by default counts emulation, so it says True on a V100.
    bf16 = capability >= BF16_CAPABILITY
    if precision == "auto":
        if bf16:
            return PrecisionChoice("auto", "bf16", f"auto: {device} ({cc}) has bf16 tensor cores")
        return PrecisionChoice(
            "auto", "fp16", f"auto: {device} ({cc}) lacks bf16 tensor cores (8.0+): fp16 with "
            "loss scaling"
        )  # fmt: skip
    if precision == "bf16" and not bf16:
        raise UserError(
            f"--precision bf16: {device} ({cc}) has no bf16 tensor cores (8.0 or newer); use "
            "--precision fp16 (or auto)"
        )
    return PrecisionChoice(precision, precision, "asked for")


def resolve_precision(precision: str, device: str) -> str:
    """The precision a cell on `device` runs at (`choose_precision`'s `resolved`)."""
    return choose_precision(precision, device).resolved


def possible_precisions(precision: str, device: str) -> list[str]:
    """The precisions a cell on `device` may have run at, judged from another machine (`bench
    status` on a login node): auto on a CUDA GPU is bf16 or fp16, by that GPU's capability."""
    if precision == "auto" and device.split(":")[0] == "cuda":
        return ["bf16", "fp16"]
    return [choose_precision(precision, device, elsewhere=True).resolved]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """torch.autocast for bf16 and fp16; nothing for fp32, nor on a device type torch cannot
    autocast (meta, where FLOPs are counted: the count does not depend on the dtype)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None or not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16's loss scaler on `device`; None for bf16 and fp32, which need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def backward_and_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Sequence[nn.Parameter],
    *,
    grad_clip: float,
    scaler: torch.amp.GradScaler | None,
) -> bool:
    """Backward, clip the gradients' norm to `grad_clip` (0: no clipping), step. With a scaler
    the loss is scaled, the gradients unscaled before clipping (so the norm is the true one),
    and a step whose gradients are not finite is skipped. True when the optimizer stepped."""
    if scaler is None:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return True
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    # The scaler lowers its scale exactly when it found inf/NaN gradients and skipped the step.
    return scaler.get_scale() >= scale
