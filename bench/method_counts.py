"""`bench list`'s trainable-parameter column: each method at its defaults on a weightless backbone
(the meta device: shapes without memory or init time)."""

from __future__ import annotations

from functools import partial
from typing import Any

from bench.backbone_config import weightless
from bench.backbones import BackboneSource, create_backbone, method_img_size, resolve_backbone
from bench.errors import UserError
from bench.harness import adapt
from bench.measure import count_params
from methods import get_method


def trainable_counts(method_names: list[str], *, backbone: str, num_classes: int) -> dict[str, str]:
    """Trainable parameters of each method with its default hyperparameters on `backbone`
    (built without weights; counts do not depend on them), formatted with the % of the backbone,
    and the paper's own percent where the adapted model states one (`paper_trainable_pct`: FPT+
    counts its frozen model at the pretrained size with a 1000-class head)."""
    source = resolve_backbone(backbone, pretrained=False, weights=None)
    out = {}
    for name in method_names:
        hparams = get_method(name).hparams
        size = method_img_size(name, hparams, requested=None, backbone=backbone, data_size=None)
        try:
            # a ViT-B's weights and their init were most of a count's time and memory; the few
            # methods that need values to build are built on the CPU instead (see weightless)
            adapted, _, backbone_params, _ = weightless(
                partial(_adapted, source, name, hparams, num_classes=num_classes, img_size=size)
            )
        except UserError as exc:
            out[name] = f"n/a ({exc})"
            continue
        trainable = count_params(adapted, trainable_only=True)
        pct = f"{100 * trainable / backbone_params:.3g} %"
        if hasattr(adapted, "paper_trainable_pct"):
            pct += f"; paper's formula {adapted.paper_trainable_pct(trainable):.3g} %"
        out[name] = f"{trainable:,} ({pct})"
    return out


def _adapted(
    source: BackboneSource, name: str, hparams: dict[str, Any], *, num_classes: int, img_size: int
) -> tuple[Any, Any, int, int]:
    """The backbone built and adapted by method `name`, as bench.harness.adapt returns it."""
    model = create_backbone(source, num_classes=num_classes, img_size=img_size)
    return adapt(model, name, hparams)
