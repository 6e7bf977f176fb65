"""AdaptFormer: a bottleneck adapter parallel to each block's MLP (Chen et al., NeurIPS 2022,
https://arxiv.org/abs/2205.13535); optionally the sequential Pfeiffer-style adapter after the MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.hparam_limits import OneOf, fraction, positive, whole
from methods.registry import register
from methods.search import SearchSpace, lr_around

STYLES = ("parallel", "sequential")


class Bottleneck(nn.Module):
    """s * W_up(Dropout(act(W_down x + b_d))) + s * b_up, zero at initialisation."""

    def __init__(
        self, dim: int, bottleneck: int, *, scale: float, dropout: float, act: type[nn.Module]
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = act()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        # AdaptFormer's "lora" init: W_down like nn.Linear's default (kaiming-uniform), W_up and
        # both biases zero, so the adapter outputs 0 and the block is the pretrained one at step 0.
        # W_down must NOT be zero too (as in KMnP/vpt's Pfeiffer block): with W_down = W_up = 0
        # both weight gradients are 0 forever and only b_up would ever train.
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(x)))) * self.scale


class AdaptedMLP(nn.Module):
    """Stands in for a block's `norm2 -> mlp` branch (the block's `norm2` becomes Identity).

    parallel:   mlp(norm(x)) + adapter(x)   - the adapter reads the residual stream without LN;
    sequential: h + adapter(h), h = mlp(norm(x)).
    The block still applies its own `ls2`/`drop_path2` to this sum (identities in ViT-B); AdaptFormer
    adds the adapter outside drop-path, which only differs when a backbone trains with drop-path.
    """

    def __init__(self, norm: nn.Module, mlp: nn.Module, adapter: Bottleneck, style: str) -> None:
        super().__init__()
        self.norm = norm
        self.mlp = mlp
        self.adapter = adapter
        self.style = style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(self.norm(x))
        return h + self.adapter(x if self.style == "parallel" else h)


@register(
    "adapter",
    lr=3e-3,  # demo, 10 epochs: 1e-3 gave 69% test, 3e-3 84-85%, 1e-2 85%
    search=SearchSpace.grid(
        lr=lr_around(3e-3),
        hparams={"bottleneck": (768, 192, 96, 24, 12)},
        source="bottleneck: EPT's reduction grid {1, 4, 8, 32, 64} at ViT-B width 768; lr: suite",
    ),
    summary="AdaptFormer: ReLU bottleneck adapter parallel to every MLP (scale 0.1) + head",
    paper="https://arxiv.org/abs/2205.13535",
    limits={
        "style": OneOf(STYLES),
        "bottleneck": whole(1),
        "scale": positive(),
        "dropout": fraction(),
    },
)
def build(
    model: nn.Module,
    *,
    style: str = "parallel",
    bottleneck: int = 64,
    scale: float = 0.1,
    dropout: float = 0.1,
) -> nn.Module:
    """Add an adapter to every block by wrapping its `norm2`/`mlp` (the block itself is reused).

    parallel (AdaptFormer): ReLU, bottleneck 64, scale 0.1, dropout 0.1.
    sequential (KMnP/vpt `Pfeiffer_Block`): after the MLP output, GELU; the VPT repo uses
    bottleneck = dim / 8 (96 for ViT-B), no scale and no dropout, i.e. `scale=1.0, dropout=0.0`.
    """
    act = nn.ReLU if style == "parallel" else nn.GELU
    dim = model.embed_dim
    ref = next(model.parameters())  # new tensors live where the backbone does
    for i, block in enumerate(model.blocks):
        if not all(isinstance(getattr(block, n, None), nn.Module) for n in ("norm2", "mlp")):
            raise ValueError(f"block {i} ({type(block).__name__}) has no norm2/mlp to adapt")
        adapter = Bottleneck(dim, bottleneck, scale=scale, dropout=dropout, act=act)
        adapter.to(device=ref.device, dtype=ref.dtype).requires_grad_(True)
        block.mlp = AdaptedMLP(block.norm2, block.mlp, adapter, style)
        # The LN moves inside the wrapper so the parallel adapter can read the un-normalised x.
        block.norm2 = nn.Identity()
    model.get_classifier().requires_grad_(True)
    return model
