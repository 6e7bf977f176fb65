"""FPT+ and FPT: fine-grained prompts carry a frozen high-resolution ViT's important keys and values
into a small side ViT (Huang et al., TNNLS 2025, arXiv 2408.02426; MICCAI 2024, arXiv 2403.07576).

The frozen large pretrained model (LPM, the run's backbone) sees the image at high resolution. In
each chosen layer its attention module exposes the per-head keys and values after the fused qkv
projection, and keeps, per head, the `token_ratio` of tokens that receive the most attention
(as in the FPT+ paper). Learnable prompts cross-attend to those keys and values (no learnable Q/K/V
projections), go through one shared Linear down to the side width, and are appended to the
tokens of the matching side-network block, which drops them again after the block. Only the
prompts, the fusion LayerNorm/projections, the side network and its head train.

The module speaks the harness's frozen-feature protocol: `frozen_features(x)` runs the LPM under
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
- The side network has the LPM's head count (reference rule: it copies the LPM config), so ViT-B
  gives 12 heads of width 8.
- `layers` counts the LPM's last blocks (the reference's "6-11" is `layers=6` on ViT-B); a backbone
  with fewer blocks uses all of them (the demo ViT has 4).
- The harness decays weights with ndim >= 2 only (prompts, Linear weights and patch-embedding);
  the reference decays every tensor, biases and LayerNorms included.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from methods.registry import keyword_builder, register
from methods.search import SearchSpace

LPM_PATCHES = 32  # patches a side for the LPM: 512 px for ViT-B/16, the paper's resolution
SIDE_MIN_PATCHES = 4
FPT_V1_SIDE_PATCHES = 14  # FPT's side input: 224 px for a /16 patch, the MICCAI paper's
IMPORTANCE = ("global", "cls")
CACHE_DTYPES = ("float32", "float16")
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
PAPER_HEAD_CLASSES = 1000  # the paper's "1.03 %" counts the LPM with its ImageNet-1k head


def patch_size(model: nn.Module) -> int:
    p = model.patch_embed.patch_size
    return int(p[0] if isinstance(p, (tuple, list)) else p)


def input_size(model: nn.Module) -> int:
    s = model.patch_embed.img_size
    return int(s[0] if isinstance(s, (tuple, list)) else s)


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


class KVTap(nn.Module):
    """A frozen timm `Attention` computed explicitly, so that its attention probabilities exist
    (fused SDPA does not return them), which keeps each head's most-attended keys and values.

    The output is the wrapped module's own; `kv` holds ([B,H,keep,hd], [B,H,keep,hd]) after a call.
    """

    def __init__(self, attn: nn.Module, *, token_ratio: float, importance: str) -> None:
        super().__init__()
        self.attn = attn
        self.token_ratio = token_ratio
        self.importance = importance
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def keep(self, tokens: int) -> int:
        return max(int(tokens * self.token_ratio), 1)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("FPT taps do not support attention masks")
        a = self.attn
        B, N, _ = x.shape
        qkv = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        probs = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B,H,N,N]
        # Importance of key token j: mean attention it receives over all queries ("global"),
        # or the class token's attention to it ("cls"); chosen per head independently.
        score = probs.mean(dim=-2) if self.importance == "global" else probs[:, :, 0]
        idx = score.topk(self.keep(N), dim=-1).indices[..., None].expand(-1, -1, -1, a.head_dim)
        self.kv = (k.gather(2, idx), v.gather(2, idx))
        out = (probs @ v).transpose(1, 2).reshape(B, N, -1)
        # Older timm releases (1.0.9, the floor) have no post-attention norm or gate: skip them.
        if getattr(a, "norm", None) is not None:
            out = a.norm(out)
        if getattr(a, "gate", None) is not None:
            out = out * a.gate(x).sigmoid()
        return a.proj_drop(a.proj(out))


class FusionModule(nn.Module):
    """Learnable prompts cross-attend to the LPM's kept keys/values; one Linear to the side width.

    FPT+: query = LayerNorm(P) (P is 768-d), residual P added before `out_proj`.
    FPT:  query = Linear(P) from a side-width P, residual P added after `out_proj`.
    """

    def __init__(
        self,
        *,
        layers: int,
        lpm_dim: int,
        side_dim: int,
        num_heads: int,
        num_prompts: int,
        prompt_dim: int,
        prompt_norm: bool,
        prompt_proj: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        if not prompt_proj and prompt_dim != lpm_dim:
            raise ValueError("a prompt width other than the LPM's needs a prompt projection")
        self.num_heads = num_heads
        self.prompts = nn.Parameter(torch.empty(layers, num_prompts, prompt_dim))
        nn.init.normal_(self.prompts, std=1e-6)  # reference init N(0, 1e-6^2)
        self.norm = nn.LayerNorm(prompt_dim) if prompt_norm else nn.Identity()
        self.proj = nn.Linear(prompt_dim, lpm_dim) if prompt_proj else nn.Identity()
        self.out_proj = nn.Linear(lpm_dim, side_dim)
        self.dropout = nn.Dropout(dropout)
        # FPT+ (prompts at the LPM width) adds them before out_proj, FPT after it.
        self.residual_first = prompt_dim == lpm_dim

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """k, v: [B, L, H, T, hd] -> fine-grained prompts [B, L, P, side_dim]."""
        B, L, H, T, hd = k.shape
        P = self.prompts.shape[1]
        q = self.proj(self.norm(self.prompts))  # [L, P, D]
        q = q.view(L, P, H, hd).transpose(1, 2)  # [L, H, P, hd]
        q = q.unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(B * L, H, P, hd)
        k, v = (t.to(q.dtype).reshape(B * L, H, T, hd) for t in (k, v))
        # softmax(q k^T / sqrt(hd)) v: the LPM's own keys and values, no learnable projections.
        ctx = F.scaled_dot_product_attention(q, k, v)
        ctx = ctx.view(B, L, H, P, hd).transpose(2, 3).reshape(B, L, P, H * hd)
        prompts = self.prompts.unsqueeze(0)
        out = self.out_proj(ctx + prompts) if self.residual_first else self.out_proj(ctx) + prompts
        return self.dropout(out)


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
        return {"method": "fpt", **{k: self.settings[k] for k in keys}}

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


def _paper_lpm_params(lpm: nn.Module) -> int:
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
) -> FineGrainedPromptTuning:
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, not {importance!r}")
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {CACHE_DTYPES}, not {cache_dtype!r}")
    if not 0 < token_ratio <= 1:
        raise ValueError(f"token_ratio must be in (0, 1], got {token_ratio}")
    if layers < 1 or num_prompts < 1 or side_reduction < 1 or prompt_reduction < 1:
        raise ValueError("layers, num_prompts, side_reduction and prompt_reduction must be >= 1")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
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
    if side_dim * side_reduction != width or side_dim % heads:
        raise ValueError(
            f"side width {width}/{side_reduction} must be a whole multiple of the {heads} heads"
        )
    if prompt_dim * prompt_reduction != width:
        raise ValueError(f"prompt width {width}/{prompt_reduction} is not a whole number")
    if prompt_dim not in (width, side_dim):
        # The residual adds the prompts before out_proj (LPM width) or after it (side width).
        raise ValueError(
            f"prompt width {prompt_dim} must equal the LPM width {width} or the side width "
            f"{side_dim} (prompt_reduction 1 or {side_reduction})"
        )
    depth = len(model.blocks)
    layer_ids = list(range(max(depth - layers, 0), depth))
    if not side_size:
        side_size = (
            _round_to_patch(size / 4, patch)
            if variant == "fpt-plus"
            else _round_to_patch(min(FPT_V1_SIDE_PATCHES * patch, size), patch)
        )
    if side_size % patch:
        raise ValueError(f"side_size={side_size} must be a multiple of the patch size {patch}")
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
        "paper_lpm_params": _paper_lpm_params(model),
    }
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
}
# FPT+ (TNNLS 2025): the last 6 LPM blocks, LayerNorm'd prompts at the backbone's width (no
# prompt reduction to choose), side at 1/4.
FPT_PLUS_DEFAULTS: dict[str, Any] = {
    k: v for k, v in FPT_V1_DEFAULTS.items() if k != "prompt_reduction"
} | {"layers": 6}


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
)(keyword_builder("fpt-plus", FPT_PLUS_DEFAULTS, _build_plus))
register(
    "fpt-v1",
    lr=LR,
    search=FPT_SPACE,
    weight_decay=0.1,
    summary="FPT (MICCAI 2024): every LPM layer, side-width prompts projected to queries",
    paper="https://arxiv.org/abs/2403.07576",
    input_size=lpm_input_size,
)(keyword_builder("fpt-v1", FPT_V1_DEFAULTS, _build_v1))
