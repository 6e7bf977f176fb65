"""Measuring a model without changing it: one fixed probe image, the RNG forked, modes restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bench.measure.device import as_device

# The probe image's own seed: drawn from a private generator, so the global RNG is not consumed.
PROBE_SEED = 0


def probe_image(img_size: int, device: torch.device, batch: int = 1) -> torch.Tensor:
    """`batch` random images [batch, 3, img_size, img_size] on `device`, the same on every call."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randn(batch, 3, img_size, img_size, generator=generator).to(device)


@contextlib.contextmanager
def untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Inside, the model may be switched to train or eval mode and run (dropout included); on
    leaving, every submodule's mode is what it was and the CPU and `device`'s RNG states are too,
    so a measurement between training steps changes nothing the run does next."""
    modes = [(m, m.training) for m in model.modules()]
    # Only the measured GPU is forked: forking every visible one costs a sync per device.
    gpus = [as_device(device).index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training
