"""MLP-k head: a k-layer MLP classifier on frozen CLS features (VPT paper's MLP-3 baseline,
Jia et al., ECCV 2022, https://arxiv.org/abs/2203.12119)."""

from torch import nn

from bench.hparam_limits import OneOf, fraction, whole
from methods.frozen_head import frozen_head
from methods.registry import register

NORMS = ("none", "layernorm", "batchnorm")


def mlp_head(
    in_dim: int, out_dim: int, *, layers: int, hidden: int, dropout: float, norm: str
) -> nn.Sequential:
    """`layers - 1` blocks of Linear -> ReLU [-> norm] [-> Dropout], then the output Linear.

    The block order (ReLU, then norm, then dropout) and the kaiming-normal (fan_out) hidden init
    follow KMnP/vpt's `src/models/mlp.py`.
    """
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        fc = nn.Linear(dim, hidden)
        nn.init.kaiming_normal_(fc.weight, a=0, mode="fan_out")
        nn.init.zeros_(fc.bias)
        modules += [fc, nn.ReLU()]
        if norm == "layernorm":
            modules.append(nn.LayerNorm(hidden))
        elif norm == "batchnorm":
            modules.append(nn.BatchNorm1d(hidden))
        if dropout > 0:
            modules.append(nn.Dropout(dropout))
        dim = hidden
    out = nn.Linear(dim, out_dim)
    # Small output weights (timm's head init scale) so the initial logits are near zero. VPT's
    # -log(99) bias is a constant shift of all logits, which softmax cross-entropy ignores.
    nn.init.trunc_normal_(out.weight, std=0.02)
    nn.init.zeros_(out.bias)
    modules.append(out)
    return nn.Sequential(*modules)


@register(
    "mlp-head",
    lr=3e-4,  # demo, 10 epochs: 1e-4 gave 76% test, 3e-4 84-85%, 1e-3 71%
    summary="MLP-k head (k Linear layers) on frozen CLS features; backbone frozen",
    paper="https://arxiv.org/abs/2203.12119",
    limits={
        "layers": whole(1, note="1 is a linear probe"),
        "hidden": whole(0, note="0 = the embedding width"),
        "dropout": fraction(),
        "norm": OneOf(NORMS),
    },
)
def build(
    model: nn.Module,
    *,
    layers: int = 3,
    hidden: int = 0,
    dropout: float = 0.1,
    norm: str = "none",
    preload: bool = True,
) -> nn.Module:
    """Replace the head by `mlp_head(...)`; `hidden=0` means the embedding width (VPT's choice).

    `norm="batchnorm"` reproduces KMnP/vpt's head exactly; it is off by default because
    BatchNorm1d fails on a training batch of one sample (a last partial batch can have one).

    `preload=True`: with `--augment none` the backbone runs once per image and the head trains
    on cached pre-logits features (`methods/frozen_head.py`), exactly as it would end to end (the
    head's own dropout still applies); with an augmenting preset, or `preload=False`, the frozen
    backbone runs at every step on the augmented view.
    """
    old = model.get_classifier()
    if not isinstance(old, nn.Linear):
        raise ValueError(f"mlp-head needs a Linear classifier head, found {type(old).__name__}")
    head = mlp_head(
        old.in_features,
        old.out_features,
        layers=layers,
        hidden=hidden or old.in_features,
        dropout=dropout,
        norm=norm,
    )
    # The wrapper takes `model.head` as its trainable head, so the swap comes first.
    model.head = head
    head.requires_grad_(True)
    settings = {
        "head": f"mlp-{layers}",
        "layers": layers,
        "hidden": hidden or old.in_features,
        "dropout": dropout,
        "norm": norm,
    }
    return frozen_head(model, preload=preload, settings=settings)
