"""Full fine-tuning: every parameter of the ViT trains (the upper-bound baseline of every PEFT paper)."""

from torch import nn

from methods.registry import register


@register(
    "full",
    optimizer="adamw",
    lr=1e-4,
    weight_decay=0.05,
    summary="Full fine-tuning: all backbone parameters and the head train",
    paper="https://arxiv.org/abs/2010.11929",
)
def build(model: nn.Module) -> nn.Module:
    model.requires_grad_(True)
    return model
