"""Batch transforms on uint8 tensors: to float, 3 channels, model size, augmentation, normalisation.

Working on whole batches on the training device keeps the small in-memory datasets of the demo
and of tests fast without worker processes. Training augmentation is a named preset
(`AUGMENTATIONS`); evaluation resizes and centre-crops as the backbone's pretrained config says
(bench.eval_view, timm's eval transform). All randomness is drawn on the CPU from
the caller's generator, so a seed reproduces a run on any device.

torchvision is deliberately not imported: it may be absent or mismatched with the installed
torch; the few operations needed are re-implemented from its documented algorithms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# the presets live in a torch-free module (bench list reads them); re-exported here for callers
from bench.augmentations import AUGMENTATIONS as AUGMENTATIONS
from bench.augmentations import DEFAULT_AUGMENT, Augmentation, get_augmentation
from bench.eval_view import PLAIN_RESIZE, EvalView, resize


def sample_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop, as torchvision's RandomResizedCrop.get_params.

    Ten attempts at an area ~ U(scale) * H * W with a log-uniform aspect ratio (w / h) that fits
    inside the image; otherwise a central crop with the image's ratio clamped into `ratio`.
    Uses the same draws in the same order as torchvision, so with `generator=None` and the same
    global seed both give the same box.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(
            torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item()
        )
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # Fallback: central crop, the image's own ratio clamped into the allowed range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def jitter_factors(n: int, amount: float, generator: torch.Generator | None) -> torch.Tensor | None:
    """n ColorJitter factors ~ U[max(0, 1 - amount), 1 + amount] (CPU), or None when amount is 0
    (nothing is drawn then, so presets without jitter keep their random stream)."""
    if amount == 0:
        return None
    return torch.empty(n).uniform_(max(0.0, 1.0 - amount), 1.0 + amount, generator=generator)


def color_jitter(
    x: torch.Tensor, brightness: torch.Tensor | None, contrast: torch.Tensor | None
) -> torch.Tensor:
    """Per-image brightness then contrast on [0,1] floats [B,3,H,W], as torchvision's
    adjust_brightness / adjust_contrast: scale by the factor; blend with the mean of the
    greyscale image; clamp to [0,1] after each. Factors are [B] tensors or None (skip)."""
    if brightness is not None:
        f = brightness.to(x.device, x.dtype)[:, None, None, None]
        x = (f * x).clamp(0.0, 1.0)
    if contrast is not None:
        f = contrast.to(x.device, x.dtype)[:, None, None, None]
        grey = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # ITU-R 601-2 luma
        mean = grey.mean(dim=(-2, -1))[:, None, None, None]
        x = (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)
    return x


def _resize(x: torch.Tensor, img_size: int) -> torch.Tensor:
    return resize(x, (img_size, img_size), "bilinear")


def prepare_batch(
    images: torch.Tensor,
    *,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    generator: torch.Generator | None = None,
    augment: str | Augmentation = DEFAULT_AUGMENT,
    eval_view: EvalView = PLAIN_RESIZE,
) -> torch.Tensor:
    """uint8 [B,C,H,W] (C = 1 or 3) -> normalised float [B,3,img_size,img_size].

    Evaluation (`train=False`) applies `eval_view` (default: a plain resize), whatever `augment`
    is. Training applies `augment`:
    brightness/contrast on the full image (FPT jitters before cropping), a random resized crop
    per image resized to img_size (a preset without one: the eval view), then horizontal/vertical
    flips. Draws from `generator` (CPU),
    in this order and only for the enabled operations: every image's crop box, hflip [B],
    vflip [B], brightness [B], contrast [B]. "flip" thus draws exactly what the old
    flip-only transform drew.
    """
    aug = get_augmentation(augment) if isinstance(augment, str) else augment
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if not train:
        x = eval_view(x, img_size)
    else:
        n, (height, width) = x.shape[0], x.shape[-2:]
        boxes = None
        if aug.crop_scale is not None:
            boxes = [
                sample_crop_params(height, width, aug.crop_scale, aug.crop_ratio, generator)
                for _ in range(n)
            ]
        hflip = torch.rand(n, generator=generator) < aug.hflip if aug.hflip > 0 else None
        vflip = torch.rand(n, generator=generator) < aug.vflip if aug.vflip > 0 else None
        bright = jitter_factors(n, aug.brightness, generator)
        contr = jitter_factors(n, aug.contrast, generator)

        x = color_jitter(x, bright, contr)
        if boxes is None:
            # no crop to draw: the evaluation view, so a cell without augmentation trains on
            # exactly what evaluation (and the frozen-feature cache) sees
            x = eval_view(x, img_size)
        else:  # per image: crops differ in size (batches are small)
            x = torch.cat(
                [
                    _resize(x[i : i + 1, :, top : top + h, left : left + w], img_size)
                    for i, (top, left, h, w) in enumerate(boxes)
                ]
            )
        if hflip is not None:
            x = torch.where(hflip.to(x.device)[:, None, None, None], x.flip(-1), x)
        if vflip is not None:
            x = torch.where(vflip.to(x.device)[:, None, None, None], x.flip(-2), x)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - mean_t) / std_t


# The normalisation of a backbone whose pretrained config names none (timm's default for ViTs
# trained from scratch, and this suite's demo backbone).
DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocess:
    """How one cell turns uint8 batches into model inputs: the model's input side, the backbone's
    normalisation and evaluation view, and the training augmentation preset."""

    img_size: int
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    augment: str = DEFAULT_AUGMENT
    eval_view: EvalView = PLAIN_RESIZE

    @classmethod
    def for_backbone(
        cls, pretrained_cfg: Mapping[str, Any], *, img_size: int, augment: str = DEFAULT_AUGMENT
    ) -> Preprocess:
        """Normalisation and evaluation view from the backbone's pretrained config (timm's
        `pretrained_cfg`, read before any method wrapper hides it); an unknown `augment`, or a
        crop the suite cannot apply, is a UserError."""
        get_augmentation(augment)
        mean = tuple(pretrained_cfg.get("mean", DEFAULT_MEAN))
        std = tuple(pretrained_cfg.get("std", DEFAULT_STD))
        view = EvalView.from_pretrained_cfg(pretrained_cfg, img_size=img_size)
        return cls(img_size=img_size, mean=mean, std=std, augment=augment, eval_view=view)

    def describe(self) -> dict[str, Any]:
        """The record's `preprocess` entry: what evaluation (and the frozen-feature cache) fed
        the model, and the training preset."""
        return {
            "img_size": self.img_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.eval_view.interpolation,
            "crop_pct": self.eval_view.crop_pct,
            "crop_mode": self.eval_view.crop_mode,
            "resize_to": self.eval_view.scale_size(self.img_size),
            "augment": self.augment,
        }

    def __call__(
        self, images: torch.Tensor, *, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`prepare_batch` with this cell's settings: augmented when `train`, else the eval view."""
        return prepare_batch(
            images,
            img_size=self.img_size,
            mean=self.mean,
            std=self.std,
            train=train,
            generator=generator,
            augment=self.augment,
            eval_view=self.eval_view,
        )

    def evaluation(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented view (evaluation, and the frozen features FPT+ caches)."""
        return self(images, train=False)
