"""Batch transforms on uint8 tensors: to float, 3 channels, model size, augmentation, normalisation.

Working on whole batches on the training device keeps the small in-memory datasets of the demo
and of tests fast without worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def prepare_batch(
    images: torch.Tensor,
    *,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 [B,C,H,W] (C = 1 or 3) -> normalised float [B,3,img_size,img_size].

    Training adds a random horizontal flip per image (the one augmentation every paper in the
    spec shares); evaluation is deterministic.
    """
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (img_size, img_size):
        x = F.interpolate(
            x, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False
        )
    if train:
        flip = torch.rand(x.shape[0], generator=generator, device="cpu") < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - mean_t) / std_t
