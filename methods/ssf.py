"""SSF: learnable scale and shift of the features after every op of a frozen ViT (Lian et al.,
NeurIPS 2022, https://arxiv.org/abs/2210.08823)."""

from __future__ import annotations

import torch
from torch import nn

from bench.hparam_limits import non_negative
from methods.registry import register


class ScaleShift(nn.Module):
    """y = gamma * x + beta over the last (channel) axis; gamma ~ N(1, std^2), beta ~ N(0, std^2)."""

    def __init__(self, dim: int, *, init_std: float) -> None:
        super().__init__()
        # Random, not (1, 0): as in dongzelian/SSF, so the model is NOT the pretrained one at step 0.
        self.gamma = nn.Parameter(torch.empty(dim).normal_(1.0, init_std))
        self.beta = nn.Parameter(torch.empty(dim).normal_(0.0, init_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


@torch.no_grad()
def _fold(layer: nn.Module, ssf: ScaleShift) -> None:
    """gamma * (W x + b) + beta = (gamma W) x + (gamma b + beta), on the output channels (the
    first axis of a Linear's or Conv2d's weight, the only one of a LayerNorm's)."""
    if not isinstance(layer, (nn.Linear, nn.Conv2d, nn.LayerNorm)) or layer.weight is None:
        raise ValueError(f"ssf: cannot fold a scale-shift into {type(layer).__name__}")
    gamma, beta = ssf.gamma.to(layer.weight.dtype), ssf.beta.to(layer.weight.dtype)
    layer.weight.mul_(gamma.view(-1, *([1] * (layer.weight.ndim - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(beta.clone(), requires_grad=False)
    else:
        layer.bias.mul_(gamma).add_(beta)


def merge(model: nn.Module) -> nn.Module:
    """Fold every scale-shift into the linear or LayerNorm it follows, the paper's
    re-parameterisation for inference: the merged model is the plain ViT with changed weights.
    The patch embedding's (after its Identity norm) goes into the patch convolution. Changes
    `model` in place and returns it."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not (isinstance(child, nn.Sequential) and isinstance(child[-1], ScaleShift)):
                continue
            layer, ssf = child
            patch_conv = isinstance(layer, nn.Identity) and parent is model.patch_embed
            _fold(model.patch_embed.proj if patch_conv else layer, ssf)
            setattr(parent, name, layer)
    return model


@register(
    "ssf",
    lr=1e-2,  # demo, 10 epochs: 5e-3 gave 73% test, 1e-2 83-84%, 3e-2 84%
    summary="SSF: per-channel scale+shift after every LN/linear, patch-embed, final norm + head",
    paper="https://arxiv.org/abs/2210.08823",
    merge=merge,
    limits={"init_std": non_negative()},
)
def build(model: nn.Module, *, init_std: float = 0.02) -> nn.Module:
    """Replace each target submodule `m` by `nn.Sequential(m, ScaleShift(out_dim))`.

    Targets (dongzelian/SSF `models/vision_transformer.py`): norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2 in every block, the patch embedding output and the final norm.
    """
    dim = model.embed_dim
    ref = next(model.parameters())

    def wrap(parent: nn.Module, name: str, width: int | None = None) -> None:
        """Scale-shift after `parent.<name>`; width None = the output width of that Linear."""
        child = getattr(parent, name, None)
        if not isinstance(child, nn.Module):
            raise ValueError(f"ssf: {type(parent).__name__} has no submodule {name!r} to scale")
        if width is None:
            if not isinstance(child, nn.Linear):
                raise ValueError(f"ssf: {type(parent).__name__}.{name} is not a Linear layer")
            width = child.out_features
        ssf = ScaleShift(width, init_std=init_std).to(device=ref.device, dtype=ref.dtype)
        setattr(parent, name, nn.Sequential(child, ssf))

    # The patch embedding's own `norm` runs last, on [B, N, D] tokens (Identity in ViT-B): wrapping
    # it scales the patch-embed output without replacing `patch_embed`, whose attributes
    # (grid_size, patch_size, ...) the ViT reads elsewhere.
    pe = model.patch_embed
    if not getattr(pe, "flatten", False) and getattr(pe, "output_fmt", "NCHW") == "NCHW":
        raise ValueError("ssf needs a patch embedding with channels-last output ([B, N, D])")
    wrap(pe, "norm", dim)
    for block in model.blocks:
        wrap(block, "norm1", dim)
        wrap(block.attn, "qkv")
        wrap(block.attn, "proj")
        wrap(block, "norm2", dim)
        wrap(block.mlp, "fc1")
        wrap(block.mlp, "fc2")
    # `norm` is the final LN for token pooling; for avg-pool ViTs it is Identity and `fc_norm`
    # follows the pooling: scale after whichever carries the LN (both are [.., D]).
    final = (
        "fc_norm" if isinstance(model.norm, nn.Identity) and hasattr(model, "fc_norm") else "norm"
    )
    wrap(model, final, dim)
    for module in model.modules():
        if isinstance(module, ScaleShift):
            module.requires_grad_(True)
    model.get_classifier().requires_grad_(True)
    return model
