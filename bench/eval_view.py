"""Evaluation's view of an image, as timm's eval transform makes it
(`timm.data.create_transform(**resolve_data_config(...), is_training=False)`): resize to
floor(img_size / crop_pct) with the backbone's interpolation, then take the centre img_size
square. "center" mode resizes the shorter side (the aspect ratio is kept), "squash" both sides.

The settings come from the backbone's pretrained config through timm's `resolve_data_config`;
the pixels are computed here on whole float batches on the training device, with torchvision's
tensor algorithms (Resize with antialias, CenterCrop), so they equal timm's transform applied to
the same tensor image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.errors import UserError

# What F.interpolate does as torchvision does on tensors; PIL-only filters (lanczos, box,
# hamming) have no tensor form.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CROP_MODES = ("center", "squash")


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """[B,C,H,W] floats to `size` (h, w), as torchvision's tensor resize: antialiased when
    shrinking with bilinear/bicubic (a 512-px image shrunk to 128 would otherwise alias)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=interpolation, antialias=True, align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre `size` square of [B,C,H,W], zero-padded first where the image is smaller
    (torchvision's CenterCrop, its rounding included)."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        pad_w, pad_h = max(size - w, 0), max(size - h, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        h, w = x.shape[-2:]
    # Python rounds halves to even, as torchvision does here
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return x[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class EvalView:
    """How evaluation turns an image into the model's square input. The default is a plain
    bilinear resize of the whole image (the suite's behaviour before it read the backbone's
    crop, and demo-vit's)."""

    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "squash"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"the backbone's pretrained config asks for {self.interpolation!r} interpolation, "
                f"which has no tensor form here ({', '.join(INTERPOLATIONS)}); choose another backbone"
            )
        if self.crop_mode not in CROP_MODES:
            raise UserError(
                f"the backbone's pretrained config asks for crop_mode {self.crop_mode!r}; the "
                f"suite evaluates with {' or '.join(CROP_MODES)} only; choose another backbone"
            )
        if not (isinstance(self.crop_pct, (int, float)) and self.crop_pct > 0):
            raise UserError(
                f"the backbone's pretrained config has crop_pct {self.crop_pct!r}; it must be a "
                "number > 0 (1.0: no crop)"
            )

    @classmethod
    def from_pretrained_cfg(cls, cfg: Mapping[str, Any], *, img_size: int) -> EvalView:
        """The view timm's `resolve_data_config` makes of a pretrained config at `img_size`
        (its defaults where the config names none: bicubic, crop_pct 0.875, centre crop)."""
        from timm.data import resolve_data_config

        data = resolve_data_config(
            {"input_size": (3, img_size, img_size)}, pretrained_cfg=dict(cfg)
        )
        return cls(
            interpolation=str(data["interpolation"]),
            crop_pct=float(data["crop_pct"]),
            crop_mode=str(data["crop_mode"]),
        )

    @property
    def plain(self) -> bool:
        """Whether this is the plain resize (what the suite did before reading the crop)."""
        return self == PLAIN_RESIZE

    def scale_size(self, img_size: int) -> int:
        """The side resized to before the centre crop (timm: floor(img_size / crop_pct))."""
        return math.floor(img_size / self.crop_pct)

    def __call__(self, x: torch.Tensor, img_size: int) -> torch.Tensor:
        """[B,C,H,W] floats -> [B,C,img_size,img_size]."""
        scale = self.scale_size(img_size)
        h, w = x.shape[-2:]
        if self.crop_mode == "squash":
            size = (scale, scale)
        elif w <= h:  # centre: the shorter side to `scale` (torchvision's Resize(int))
            size = (int(scale * h / w), scale)
        else:
            size = (scale, int(scale * w / h))
        return center_crop(resize(x, size, self.interpolation), img_size)


# The whole image resized, bilinear: the suite's evaluation before it read the backbone's crop,
# and demo-vit's (caches and records without a `preprocess` entry were made this way).
PLAIN_RESIZE = EvalView()
