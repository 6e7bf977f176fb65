"""Two training settings the papers' recipes set on the backbone before a method adapts it: how the
fresh classification head starts, and the dropout its trained layers run."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.errors import UserError
from bench.option_values import HEAD_INITS

# The dropout modules of a timm ViT that `backbone_dropout` sets: after the position embedding, after
# the attention projection, and the MLP's two (timm's pos_drop_rate and proj_drop_rate). The
# attention-probability dropout stays 0, as in VPT's and MMClassification's ViTs.
_DROPOUT_NAMES = ("pos_drop", "proj_drop", "drop1", "drop2")


def init_head(model: nn.Module, how: str) -> None:
    """Re-initialise `model.get_classifier()` (a Linear) as `how` names; "timm" leaves it."""
    if how not in HEAD_INITS:
        raise UserError(f"head_init {how!r}: expected one of {', '.join(HEAD_INITS)}")
    if how == "timm":
        return
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise UserError(f"head_init {how!r} needs a Linear head; this model's is {type(head)}")
    with torch.no_grad():
        if how == "mmcls":
            nn.init.normal_(head.weight, std=0.01)
            if head.bias is not None:
                head.bias.zero_()
        else:
            nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
            if head.bias is not None:
                head.bias.fill_(-math.log((1 - 0.01) / 0.01))


def set_dropout(model: nn.Module, p: float | None) -> None:
    """Set every token, projection and MLP dropout of a timm ViT to `p` (None: leave them)."""
    if p is None:
        return
    if not 0 <= p < 1:
        raise UserError(f"backbone_dropout must be in [0, 1), got {p}")
    hits = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Dropout) and name.rsplit(".", 1)[-1] in _DROPOUT_NAMES
    ]
    if not hits:
        raise UserError("backbone_dropout: this backbone has no timm ViT dropout layers to set")
    for m in hits:
        m.p = p
