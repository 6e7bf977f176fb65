"""Batch-1 latency: how long one image takes through the whole model, device-synchronised."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.measure.device import as_device
from bench.measure.probe import probe_image, untouched
from bench.measure.timing import StepTimer
from bench.precision import autocast


def batch1_latency(
    model: nn.Module,
    *,
    img_size: int,
    device: torch.device | str,
    precision: str,
    warmup: int = 3,
    repeats: int = 20,
) -> dict[str, Any]:
    """Median and 90th-percentile milliseconds of one probe image through `model` in eval mode
    under `torch.inference_mode` and the cell's autocast, over `repeats` calls after `warmup`
    untimed ones (kernel selection, lazy allocations). What a deployed model answers one request
    in; a frozen-feature model runs its frozen part too. Leaves the model and RNG as they were."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    dev = as_device(device)
    x = probe_image(img_size, dev)
    timer = StepTimer(dev, warmup=warmup)
    with untouched(model, dev), torch.inference_mode():
        model.eval()
        for _ in range(warmup + repeats):
            with timer.step(1), autocast(dev, precision):
                model(x)
    timing = timer.summary()
    return {
        "median_ms": 1000 * timing["step_time_median_s"],
        "p90_ms": 1000 * timing["step_time_p90_s"],
        "repeats": repeats,
        "warmup": warmup,
    }
