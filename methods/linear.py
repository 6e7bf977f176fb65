"""Linear probing: only the classifier head trains on frozen CLS features (VPT paper's Linear baseline)."""

from torch import nn

from methods.frozen_head import frozen_head
from methods.registry import register


@register(
    "linear",
    optimizer="adamw",
    lr=1e-2,
    weight_decay=0.0,
    summary="Linear probe: frozen backbone (eval mode), trainable head only",
    paper="https://arxiv.org/abs/2203.12119",
)
def build(model: nn.Module, *, preload: bool = True) -> nn.Module:
    """The timm head trains on the frozen backbone's pre-logits features (`methods/frozen_head.py`).

    `preload=True`: with `--augment none` (the classic linear-probe protocol) the backbone runs
    once per image and the head trains on cached features, exactly as it would end to end, at a
    fraction of the cost; with an augmenting preset, or `preload=False`, the frozen backbone runs
    at every step on the augmented view.
    """
    # The backbone stays in eval mode (set_train_mode), as KMnP/vpt forces `enc.eval()`.
    model.get_classifier().requires_grad_(True)
    return frozen_head(model, preload=preload, settings={"head": "linear"})
