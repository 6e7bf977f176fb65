"""Linear probing: only the classifier head trains on frozen CLS features (VPT paper's Linear baseline)."""

from torch import nn

from methods.registry import register


@register(
    "linear",
    optimizer="adamw",
    lr=1e-2,
    weight_decay=0.0,
    summary="Linear probe: frozen backbone (eval mode), trainable head only",
    paper="https://arxiv.org/abs/2203.12119",
)
def build(model: nn.Module) -> nn.Module:
    # The harness keeps fully-frozen submodules in eval mode, as KMnP/vpt forces `enc.eval()`.
    model.get_classifier().requires_grad_(True)
    return model
