"""Linear probing: only the classifier head trains on frozen CLS features (VPT paper's Linear baseline)."""

from torch import nn

from methods.frozen_head import frozen_head
from methods.registry import register
from methods.search import LrRule, SearchSpace, lr_around


@register(
    "linear",
    lr=1e-2,
    search={
        "adamw": SearchSpace.grid(
            lr=lr_around(1e-2),
            source="suite: half-decade grid around the default (KMnP's grid is for SGD)",
        ),
        # --set linear.optimizer=sgd searches the VPT repo's linear-probe grid
        "sgd": SearchSpace.grid(
            lr=(50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05),
            lr_rule=LrRule(256),
            source="KMnP/vpt linear probe: SGD base lr grid x batch/256, wd grid",
        ),
    },
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
