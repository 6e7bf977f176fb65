"""Full fine-tuning: every parameter of the ViT trains (the upper-bound baseline of every PEFT paper)."""

from torch import nn

from methods.registry import register
from methods.search import LrRule, SearchSpace


@register(
    "full",
    lr=1e-4,
    search=SearchSpace.grid(
        lr=(1e-3, 1e-4, 5e-4, 5e-3),
        lr_rule=LrRule(256),
        source="KMnP/vpt full fine-tuning: base lr grid x batch/256, wd grid (tune_fgvc.py)",
    ),
    weight_decay=0.05,
    paper="https://arxiv.org/abs/2010.11929",
)
def build(model: nn.Module) -> nn.Module:
    """Full fine-tuning: all backbone parameters and the head train"""
    model.requires_grad_(True)
    return model
