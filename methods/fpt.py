"""FPT+ and FPT: fine-grained prompts carry a frozen high-resolution ViT's important keys and values
into a small side ViT (Huang et al., TNNLS 2025, arXiv 2408.02426; MICCAI 2024, arXiv 2403.07576).

The frozen large pretrained model (LPM, the run's backbone) sees the image at high resolution. In
each chosen layer its attention module exposes the per-head keys and values after the fused qkv
projection, and keeps, per head, the `token_ratio` of tokens that receive the most attention
(as in the FPT+ paper). Learnable prompts cross-attend to those keys and values (no learnable Q/K/V
projections), go through one shared Linear down to the side width, and are appended to the
tokens of the matching side-network block, which drops them again after the block. Only the
prompts, the fusion LayerNorm/projections, the side network and its head train.

The modules: methods/fpt_layers.py (the attention tap, the fusion module), methods/fpt_model.py
(the assembled model), this one (size rules, builders, registration). The module speaks the harness's frozen-feature protocol: `frozen_features(x)` runs the LPM under
`torch.no_grad()` on the un-augmented image and returns per-image tensors; `forward_with(x,
features)` runs the trainable part on the (augmented) image. The harness can therefore compute the
features once per image and store them (`preload=True`, the reference's default), after which the
LPM is released and never runs during training: that is where FPT+'s memory saving comes from.

Resolutions (both are hyperparameters; 0 means "derive by the rule", and the record keeps the
values used):
- LPM: the run's input size. Without `--img-size` it is 32 patches a side, the paper's 512 px for
  ViT-B/16, capped at the dataset's stored image size (upsampling adds no detail) and never below
  the backbone's native size; `lpm_size` pins it for this method only.
- Side network: FPT+ a quarter of the LPM size (the paper's 128 from 512); FPT 14 patches a side
  (the paper's 224 for /16 patches) but not above the LPM size; rounded to the patch size, at
  least 4 patches a side.

Choices, documented where they depart from the reference (YijinHuang/FPT):
- The side network is a timm `VisionTransformer` (random init, as in the reference, which builds
  its HF ViT from a config); LayerNorm eps is timm's 1e-6 rather than HF's 1e-12.
- The LPM's position embedding is timm's resampling of the checkpoint's grid (antialiased bicubic,
  at load); the reference's HF ViT resamples at forward time (bicubic by scale factor, see
  `hf_resample_pos_embed`). `hf_style=True` computes both this and the eps as the reference does.
- The side network has the LPM's head count (reference rule: it copies the LPM config), so ViT-B
  gives 12 heads of width 8.
- `layers` counts the LPM's last blocks (the reference's "6-11" is `layers=6` on ViT-B); a backbone
  with fewer blocks uses all of them (the demo ViT has 4).
- The harness decays weights with ndim >= 2 only (prompts, Linear weights and patch-embedding);
  the reference decays every tensor, biases and LayerNorms included.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.hparam_limits import Limit, Number, OneOf, fraction, whole
from methods.fpt_layers import FusionModule, KVTap
from methods.fpt_model import (
    FineGrainedPromptTuning,
    input_size,
    paper_lpm_params,
    patch_size,
)
from methods.registry import keyword_builder, register
from methods.search import SearchSpace

__all__ = [
    "FineGrainedPromptTuning",
    "FusionModule",
    "KVTap",
    "build_fpt",
    "hf_resample_pos_embed",
    "input_size",
    "lpm_input_size",
    "patch_size",
]

LPM_PATCHES = 32  # patches a side for the LPM: 512 px for ViT-B/16, the paper's resolution
SIDE_MIN_PATCHES = 4
FPT_V1_SIDE_PATCHES = 14  # FPT's side input: 224 px for a /16 patch, the MICCAI paper's
IMPORTANCE = ("global", "cls")
CACHE_DTYPES = ("float32", "float16")
HF_LAYER_NORM_EPS = 1e-12  # transformers' ViTConfig.layer_norm_eps; timm's ViT uses 1e-6
# The reference sets lr per dataset (5e-5 to 5e-3; 1e-4 in its template). The largest, 5e-3
# (ISIC 2016), is the default: a randomly initialised side network needs it in short runs (demo,
# 10 epochs: 1e-4 57.2 %, 1e-3 67.6 %, 1e-2 80.0 %). Protocols pin the paper's per-dataset values.
LR = 5e-3
# FPT+ picks a learning rate per dataset (configs/dataset/*.yaml): those rates are its grid; the
# paper keeps weight decay at 0.1.
FPT_SPACE = SearchSpace.grid(
    lr=(5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3),
    weight_decay=(0.1, 0.01, 0.0),
    source="FPT+ (Huang et al. 2025): its per-dataset learning rates; wd: the paper's 0.1 and two "
    "smaller",
)


def lpm_input_size(native: int, patch: int, data_size: int | None, hparams: dict[str, Any]) -> int:
    """The LPM resolution when `--img-size` is not given (see the module docstring)."""
    if hparams.get("lpm_size"):
        return int(hparams["lpm_size"])
    size = LPM_PATCHES * patch
    if data_size:
        size = min(size, data_size)
    return max(size // patch * patch, native)


def _round_to_patch(size: float, patch: int) -> int:
    return max(round(size / patch), SIDE_MIN_PATCHES) * patch


def hf_resample_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], prefix: int = 1
) -> torch.Tensor:
    """`pos_embed` [1, prefix + n*n, D] (a square grid) resampled to `grid` (rows, cols) as the
    reference's LPM does it: transformers' `ViTEmbeddings.interpolate_pos_encoding` of its 2024
    releases (e.g. v4.40; YijinHuang/FPT runs its HF ViT with `interpolate_pos_encoding=True`).
    That is bicubic `F.interpolate(scale_factor=((rows + 0.1) / n, (cols + 0.1) / n),
    align_corners=False)`, no antialias, in float32, the prefix (class token) rows kept as they
    are, and an unchanged square grid returned as it is (its early exit). Later transformers
    releases pass `size=` instead of the +0.1 scale factor; timm resamples with antialias to the
    exact size."""
    n_old = pos_embed.shape[1] - prefix
    old = math.isqrt(n_old)
    if old * old != n_old:
        raise ValueError(f"a position embedding of {n_old} patches is not a square grid")
    rows, cols = grid
    if n_old == rows * cols and rows == cols:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, prefix:].float().reshape(1, old, old, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(
        patches,
        scale_factor=((rows + 0.1) / math.sqrt(n_old), (cols + 0.1) / math.sqrt(n_old)),
        mode="bicubic",
        align_corners=False,
    )
    patches = patches.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :prefix], patches], dim=1)


def _checkpoint_pos_embed(model: nn.Module) -> tuple[torch.Tensor, str]:
    """The position embedding the reference's HF ViT would start from, and where it came from.

    With pretrained weights built at another size, create_backbone kept the checkpoint's own
    embedding (`pretrained_pos_embed`) before timm resampled it. Otherwise the model's embedding
    is on its own grid: at the native size (pretrained_cfg's input size) that is the checkpoint's
    (or a random model's) grid itself. A random model at another size has no checkpoint: its own
    embedding, resampled the timm way to the native grid, stands in for the one a pretrained
    model would have loaded there, so the LPM still gets a native grid resampled HF-style."""
    kept = getattr(model, "pretrained_pos_embed", None)
    if kept is not None:
        return kept, "checkpoint"
    patch = patch_size(model)
    native = model.pretrained_cfg.get("input_size", (3, input_size(model), input_size(model)))
    grid = (native[-2] // patch, native[-1] // patch)
    own = model.pos_embed.detach()
    if tuple(model.patch_embed.grid_size) == grid:
        return own, "model (its native grid: a checkpoint's own when pretrained)"
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    stand_in = resample_abs_pos_embed(own, new_size=list(grid), num_prefix_tokens=prefix)
    return stand_in, "model, resampled to the native grid (no checkpoint grid: random weights)"


def _apply_hf_style(lpm: nn.Module, side: nn.Module) -> str:
    """Compute as the reference's HF ViTs do: the LPM's position embedding resampled HF-style from
    the checkpoint's grid, every LayerNorm of the LPM and the side ViT at eps 1e-12. Returns where
    the resampled grid came from (for the record)."""
    origin = "none (the LPM has no absolute position embedding)"
    if lpm.pos_embed is not None:
        source, origin = _checkpoint_pos_embed(lpm)
        prefix = 0 if lpm.no_embed_class else lpm.num_prefix_tokens
        pos = hf_resample_pos_embed(source, tuple(lpm.patch_embed.grid_size), prefix)
        with torch.no_grad():
            lpm.pos_embed.copy_(pos.to(lpm.pos_embed.device, lpm.pos_embed.dtype))
    for module in (*lpm.modules(), *side.modules()):
        if isinstance(module, nn.LayerNorm):
            module.eps = HF_LAYER_NORM_EPS
    return origin


def build_fpt(
    model: nn.Module,
    *,
    variant: str,
    layers: int,
    num_prompts: int,
    token_ratio: float,
    importance: str,
    side_reduction: int,
    prompt_reduction: int,
    dropout: float,
    lpm_size: int,
    side_size: int,
    preload: bool,
    cache_dtype: str,
    hf_style: bool = False,
) -> FineGrainedPromptTuning:
    if not hasattr(model, "pos_embed") or not hasattr(model.blocks[0].attn, "qkv"):
        raise ValueError("FPT needs a timm VisionTransformer with fused qkv attention")
    patch, size = patch_size(model), input_size(model)
    if lpm_size and lpm_size != size:
        raise ValueError(
            f"lpm_size={lpm_size} but the backbone was built for {size} px; the harness builds "
            "the backbone at the method's LPM size, so set it before building"
        )
    width = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    side_dim = width // side_reduction
    prompt_dim = width // prompt_reduction
    depth = len(model.blocks)
    layer_ids = list(range(max(depth - layers, 0), depth))
    if not side_size:
        side_size = (
            _round_to_patch(size / 4, patch)
            if variant == "fpt-plus"
            else _round_to_patch(min(FPT_V1_SIDE_PATCHES * patch, size), patch)
        )
    tokens = (size // patch) ** 2 + model.num_prefix_tokens
    for i in layer_ids:
        model.blocks[i].attn = KVTap(
            model.blocks[i].attn, token_ratio=token_ratio, importance=importance
        )
    keep = model.blocks[layer_ids[0]].attn.keep(tokens)
    fusion = FusionModule(
        layers=len(layer_ids),
        lpm_dim=width,
        side_dim=side_dim,
        num_heads=heads,
        num_prompts=num_prompts,
        prompt_dim=prompt_dim,
        prompt_norm=variant == "fpt-plus",
        prompt_proj=variant != "fpt-plus",
        dropout=dropout,
    )
    side = VisionTransformer(
        img_size=side_size,
        patch_size=patch,
        embed_dim=side_dim,
        depth=len(layer_ids),
        num_heads=heads,
        mlp_ratio=4.0,
        num_classes=model.num_classes,
        global_pool="token",
    )
    hf_origin = _apply_hf_style(model, side) if hf_style else None
    settings = {
        "variant": variant,
        "layers": len(layer_ids),
        "layer_ids": layer_ids,
        "lpm_size": size,
        "side_size": side_size,
        "lpm_tokens": tokens,
        "keep_tokens": keep,
        "side_tokens": (side_size // patch) ** 2 + 1,
        "num_prompts": num_prompts,
        "lpm_heads": heads,
        "lpm_head_dim": width // heads,
        "side_width": side_dim,
        "side_heads": heads,
        "prompt_dim": prompt_dim,
        "token_ratio": token_ratio,
        "importance": importance,
        "preload": preload,
        "cache_dtype": cache_dtype,
        "hf_style": hf_style,
        "paper_lpm_params": paper_lpm_params(model),
    }
    if hf_origin is not None:
        settings["hf_pos_embed_from"] = hf_origin
    return FineGrainedPromptTuning(
        model, layer_ids, fusion, side, side_size=side_size, settings=settings
    )


# FPT (MICCAI 2024): all 12 LPM layers, 96-d prompts with a Linear to the queries, side at the
# backbone's native size.
FPT_V1_DEFAULTS: dict[str, Any] = {
    "layers": 12,
    "num_prompts": 16,
    "token_ratio": 0.2,
    "importance": "global",
    "side_reduction": 8,
    "prompt_reduction": 8,
    "dropout": 0.5,
    "lpm_size": 0,
    "side_size": 0,
    "preload": True,
    "cache_dtype": "float32",
    # True: position embedding and LayerNorm eps computed as the reference's HF ViTs do
    "hf_style": False,
}
# FPT+ (TNNLS 2025): the last 6 LPM blocks, LayerNorm'd prompts at the backbone's width (no
# prompt reduction to choose), side at 1/4.
FPT_PLUS_DEFAULTS: dict[str, Any] = {
    k: v for k, v in FPT_V1_DEFAULTS.items() if k != "prompt_reduction"
} | {"layers": 6}
# What each knob may be.
FPT_V1_LIMITS: dict[str, Limit] = {
    "layers": whole(1, note="more than the depth means every block"),
    "num_prompts": whole(1),
    "token_ratio": Number(low=0, high=1, low_open=True),
    "importance": OneOf(IMPORTANCE),
    # the side ViT keeps the heads: width / r must split into them, i.e. r divides a head's width
    "side_reduction": Number(low=1, integer=True, divides="head_dim"),
    # the residual adds the prompts before out_proj (the LPM's width) or after it (the side's)
    "prompt_reduction": Number(low=1, integer=True, same_as="side_reduction", also=(1,)),
    "dropout": fraction(),
    "lpm_size": whole(0, note="0 = the method's rule"),
    "side_size": Number(low=0, integer=True, multiple_of="patch", note="0 = the variant's default"),
    "cache_dtype": OneOf(CACHE_DTYPES),
}
FPT_PLUS_LIMITS = {k: v for k, v in FPT_V1_LIMITS.items() if k in FPT_PLUS_DEFAULTS}


def _build_plus(model: nn.Module, **hparams: Any) -> FineGrainedPromptTuning:
    return build_fpt(model, variant="fpt-plus", prompt_reduction=1, **hparams)


def _build_v1(model: nn.Module, **hparams: Any) -> FineGrainedPromptTuning:
    return build_fpt(model, variant="fpt-v1", **hparams)


register(
    "fpt-plus",
    lr=LR,
    search=FPT_SPACE,
    weight_decay=0.1,
    summary="FPT+: prompts fuse a frozen high-res ViT's important K/V into a small side ViT",
    paper="https://arxiv.org/abs/2408.02426",
    aliases=("fpt",),
    input_size=lpm_input_size,
    limits=FPT_PLUS_LIMITS,
)(keyword_builder("fpt-plus", FPT_PLUS_DEFAULTS, _build_plus))
register(
    "fpt-v1",
    lr=LR,
    search=FPT_SPACE,
    weight_decay=0.1,
    summary="FPT (MICCAI 2024): every LPM layer, side-width prompts projected to queries",
    paper="https://arxiv.org/abs/2403.07576",
    input_size=lpm_input_size,
    limits=FPT_V1_LIMITS,
)(keyword_builder("fpt-v1", FPT_V1_DEFAULTS, _build_v1))
