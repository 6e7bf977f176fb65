"""FPT+ and FPT's assembled model (methods/fpt.py builds it): the frozen LPM with its taps, the
fusion module and the side ViT, speaking the harness's frozen-feature protocol."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from methods.fpt_layers import FusionModule

PAPER_HEAD_CLASSES = 1000  # the paper's "1.03 %" counts the LPM with its ImageNet-1k head


def patch_size(model: nn.Module) -> int:
    p = model.patch_embed.patch_size
    return int(p[0] if isinstance(p, (tuple, list)) else p)


def input_size(model: nn.Module) -> int:
    s = model.patch_embed.img_size
    return int(s[0] if isinstance(s, (tuple, list)) else s)


class FineGrainedPromptTuning(nn.Module):
    """Frozen LPM (tapped) + fusion module + side ViT; logits from the side network's class token."""

    def __init__(
        self,
        lpm: nn.Module,
        layer_ids: list[int],
        fusion: FusionModule,
        side: VisionTransformer,
        *,
        side_size: int,
        settings: dict[str, Any],
    ) -> None:
        super().__init__()
        self.lpm: nn.Module | None = lpm
        self.layer_ids = layer_ids
        self.fusion = fusion
        self.side = side
        self.side_size = side_size
        self.settings = settings
        self.preload = bool(settings["preload"])
        self.cache_dtype = settings["cache_dtype"]

    # ---- the frozen-feature protocol used by the harness
    def feature_identity(self) -> dict[str, Any]:
        """Everything besides the images and backbone weights that determines `frozen_features`."""
        keys = ("layers", "layer_ids", "lpm_size", "token_ratio", "importance")
        identity = {"method": "fpt", **{k: self.settings[k] for k in keys}}
        if self.settings.get("hf_style"):
            # Only when set: caches built before the option existed keep their key.
            identity["hf_style"] = True
        return identity

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of each feature tensor."""
        s = self.settings
        shape = (len(self.layer_ids), s["lpm_heads"], s["keep_tokens"], s["lpm_head_dim"])
        return {"k": shape, "v": shape}

    @torch.no_grad()
    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The LPM's kept keys and values for un-augmented images: {"k", "v"} of [B, L, H, T, hd]."""
        lpm = self.lpm
        if lpm is None:
            raise RuntimeError(
                "the frozen LPM was released after preloading; features come from the cache"
            )
        if x.shape[-1] != input_size(lpm):
            x = F.interpolate(x, size=input_size(lpm), mode="bilinear", antialias=True)
        x = lpm.norm_pre(lpm.patch_drop(lpm._pos_embed(lpm.patch_embed(x))))
        ks, vs = [], []
        for i, blk in enumerate(lpm.blocks[: self.layer_ids[-1] + 1]):
            x = blk(x)
            if i in self.layer_ids:
                k, v = blk.attn.kv
                blk.attn.kv = None
                ks.append(k)
                vs.append(v)
        return {"k": torch.stack(ks, 1), "v": torch.stack(vs, 1)}

    def forward_with(self, x: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits from the (augmented) image `x` and its frozen features."""
        prompts = self.fusion(features["k"], features["v"])  # [B, L, P, d]
        if x.shape[-1] != self.side_size:
            x = F.interpolate(x, size=self.side_size, mode="bilinear", antialias=True)
        s = self.side
        x = s.norm_pre(s.patch_drop(s._pos_embed(s.patch_embed(x))))
        n = prompts.shape[2]
        for i, blk in enumerate(s.blocks):
            # Deep-prompt style: the layer's prompts join after the tokens and leave after it.
            x = blk(torch.cat([x, prompts[:, i].to(x.dtype)], dim=1))[:, :-n]
        return s.forward_head(s.norm(x))

    def release_frozen(self) -> None:
        """Drop the LPM once its features are cached, so training never holds or runs it."""
        self.lpm = None

    # ---- the plain method contract
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, self.frozen_features(x))

    def get_classifier(self) -> nn.Module:
        return self.side.head

    def describe(self) -> dict[str, Any]:
        return dict(self.settings)

    def paper_trainable_pct(self, trainable: int) -> float:
        """The reference's formula: learnable / (learnable + LPM with a 1000-class head), the LPM
        counted at its pretrained resolution (the reference loads it there and interpolates)."""
        return 100.0 * trainable / (trainable + self.settings["paper_lpm_params"])


def paper_lpm_params(lpm: nn.Module) -> int:
    """LPM parameters as the reference counts them: position embedding at the pretrained size,
    the task head replaced by an ImageNet-1k head."""
    total = sum(p.numel() for p in lpm.parameters())
    head = sum(p.numel() for p in lpm.get_classifier().parameters())
    width = lpm.embed_dim
    native = lpm.pretrained_cfg.get("input_size", (3, input_size(lpm), input_size(lpm)))[-1]
    pos = lpm.pos_embed
    if pos is not None:
        prefix = 0 if lpm.no_embed_class else lpm.num_prefix_tokens
        grid = native // patch_size(lpm)
        total += ((grid * grid + prefix) - pos.shape[1]) * width
    return total - head + PAPER_HEAD_CLASSES * (width + 1)
