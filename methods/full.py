"""Full fine-tuning: every parameter of the ViT trains (the upper-bound baseline of every PEFT paper)."""

from torch import nn

from methods.registry import register
from methods.search import LrRule, SearchSpace


@register(
    "full",
    lr=1e-4,
    search=SearchSpace.grid(
        lr=(1e-3, 1e-4, 5e-4, 5e-3),
        # tune_fgvc.py lists wd {0.01, 1e-3, 1e-4, 0}, but KMnP's AdamW (src/solver/optimizer.py)
        # replaces any wd > 0 by 0.01: the grid it actually searched is {0.01, 0}
        weight_decay=(0.01, 0.0),
        lr_rule=LrRule(256),
        source="KMnP/vpt full fine-tuning: base lr grid x batch/256 (tune_fgvc.py); wd {0.01, 0}, "
        "the values its AdamW runs (src/solver/optimizer.py sets any wd > 0 to 0.01)",
    ),
    weight_decay=0.05,
    paper="https://arxiv.org/abs/2010.11929",
)
def build(model: nn.Module) -> nn.Module:
    """Full fine-tuning: all backbone parameters and the head train"""
    model.requires_grad_(True)
    return model
