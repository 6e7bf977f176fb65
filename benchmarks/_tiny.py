"""Shared helpers for the benchmarks: tiny timm ViTs, random uint8 data, per-method input sizes.

Named `_tiny.py` rather than `conftest.py` so it cannot clash with a conftest another benchmark
file brings; pytest's default (prepend) import mode puts this folder on sys.path, so the test
files import it as `_tiny`.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from methods import get_method

ARCH = "vit_small_patch16_224"  # the timm VisionTransformer builder; the kwargs shrink it
MEAN = STD = (0.5, 0.5, 0.5)  # vit_small_patch16_224's pretrained_cfg normalisation

# Defaults that assume ViT-B widths and do not divide a 48-wide tiny ViT: road needs its group
# size to divide the qkv output (3 * 48 = 144); 32 does for ViT-B's 2304, 16 does here.
TINY_HPARAMS: dict[str, dict[str, Any]] = {"road": {"group_size": 16}}


def tiny_vit(
    *,
    img_size: int = 32,
    patch_size: int = 8,
    embed_dim: int = 48,
    depth: int = 3,
    num_heads: int = 3,
    num_classes: int = 5,
    seed: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """A randomly initialised timm VisionTransformer, frozen as `create_backbone` leaves it
    (the method decides what trains); the same seed gives the same weights."""
    torch.manual_seed(seed)
    model = timm.create_model(
        ARCH,
        pretrained=False,
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        num_classes=num_classes,
        **kwargs,
    )
    model.requires_grad_(False)
    return model


def method_hparams(method: str) -> dict[str, Any]:
    """The method's registered defaults with the tiny-ViT overrides applied."""
    return {**get_method(method).hparams, **TINY_HPARAMS.get(method, {})}


def method_input_size(method: str, hparams: dict[str, Any], *, native: int, patch: int) -> int:
    """`bench.backbones.method_img_size` without --img-size, for a backbone built here rather
    than named: the method's own rule (FPT+: its LPM resolution) or the native size."""
    rule = get_method(method).input_size
    return native if rule is None else rule(native, patch, None, hparams)


def random_split(
    n: int, size: int, *, num_classes: int = 5, channels: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [n, C, size, size], labels int64 [n]), the layout of `bench.data.Split`."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return images, labels


def report(title: str, figures: dict[str, Any]) -> None:
    """Print one benchmark's figures on a line each (visible with `-s`)."""
    print(f"\n[{title}]")
    for key, value in figures.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<28} {text}")
