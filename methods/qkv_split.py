"""timm's fused attention `qkv` Linear split into independent q, k and v Linears, and fused back.

LoRA (Hu et al., ICLR 2022, section 4.2/7.1) adapts W_q and W_v with two independent rank-r
updates and leaves W_k alone. timm computes Q, K and V with one fused Linear (D -> 3·D), so a
LoRA on it shares one down-projection A across Q, K and V and changes K. Splitting the fused layer
into three Linears lets peft target q and v only; the split module concatenates their outputs,
so timm's Attention (which reshapes qkv's output into its 3 parts) runs unchanged. `fuse_qkv`
undoes the split after a merge, so a deployed model is a plain timm ViT again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

# Module path of a timm VisionTransformer's fused qkv Linear (anchored as in peft_inject).
QKV_PATH = r"blocks\.\d+\.attn\.qkv"
# The split layers as `targets` names: each one of the three Linears of every block.
SPLIT_TARGETS: Mapping[str, tuple[str, ...]] = {
    part: (QKV_PATH + r"\." + part,) for part in ("q", "k", "v")
}
_SPLIT_PARAM = re.compile(QKV_PATH + r"\.[qkv]\.")


class SplitQkv(nn.Module):
    """The fused `qkv` Linear as three Linears `q`, `k`, `v` (its row slices, bias or not); the
    forward concatenates their outputs in q, k, v order, as the fused layer lays them out."""

    def __init__(self, fused: nn.Linear) -> None:
        super().__init__()
        if fused.out_features % 3:
            raise ValueError(f"a fused qkv has 3·D outputs; got {fused.out_features}")
        d = fused.out_features // 3
        self.in_features, self.out_features = fused.in_features, fused.out_features
        for i, part in enumerate("qkv"):
            rows = slice(i * d, (i + 1) * d)
            setattr(self, part, _linear_like(fused, fused.weight[rows], _rows(fused.bias, rows)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def _rows(bias: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if bias is None else bias[rows]


def _linear_like(like: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding copies of `weight` and `bias`, on `like`'s device and dtype and as
    trainable (or frozen) as it: splitting must not unfreeze the backbone."""
    out_f, in_f = weight.shape
    layer = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.weight.requires_grad_(like.weight.requires_grad)
    if bias is not None:
        layer.bias.requires_grad_(like.bias.requires_grad)
    return layer


def split_qkv(model: nn.Module) -> nn.Module:
    """Replace every block's fused `attn.qkv` Linear by a `SplitQkv` in place; returns `model`."""
    for name, module in list(model.named_modules()):
        if re.fullmatch(QKV_PATH, name) and type(module) is nn.Linear:
            _replace(model, name, SplitQkv(module))
    return model


def fuse_qkv(model: nn.Module) -> nn.Module:
    """Put one fused Linear back in place of every `SplitQkv` whose parts are plain Linears (as
    after merging a LoRA), so the model is a plain timm ViT again; returns `model`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SplitQkv):
            parts = (module.q, module.k, module.v)
            if any(type(p) is not nn.Linear for p in parts):
                raise TypeError(f"{name}: merge the adapters before fusing q, k and v back")
            bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
            weight = torch.cat([p.weight for p in parts])
            _replace(model, name, _linear_like(parts[0], weight, bias))
    return model


def names_split_layers(names: Iterable[str]) -> bool:
    """Whether parameter `names` come from a model whose qkv was split (`blocks.<i>.attn.qkv.q.`
    ...): a fresh backbone must then be split too before they load onto it."""
    return any(_SPLIT_PARAM.search(n) for n in names)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
