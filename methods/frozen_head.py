"""A trainable head on a frozen timm ViT (`linear`, `mlp-head`), with its frozen-feature cache.

The backbone is frozen and kept in eval mode, so its pre-logits features (pooled, after the
final norm: the head's input) of an un-augmented image are the same in every epoch. With
`preload=True` the model speaks the harness's frozen-feature protocol (as FPT+ does, see
`methods/fpt.py`): the harness computes `frozen_features` once per image into the on-disk cache
(`bench/feature_cache.py`), releases the backbone, and every epoch then runs the head alone on
cached rows. The head ignores the image once it has features (`image_free`), so the training
loop builds no augmented view. A cached feature cannot be augmented, so the harness uses the
cache only when the cell trains without augmentation (`--augment none`, the classic linear-probe
protocol), where it is exact: same metrics as the un-cached run, to float tolerance. With an
augmenting preset the head trains end to end on every step's view, as the paper protocols do, and
the record's `feature_cache` says why the cache was not used.

With `preload=False` the model is a plain end-to-end module (no frozen-feature protocol): the
frozen backbone runs on every step's augmented view, as a naive linear probe does.

This module registers no method; `methods/linear.py` and `methods/mlp_head.py` build these.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FEATURE = "pre_logits"  # the cached tensor's name: the head's input
CACHE_DTYPE = "float32"  # pre-logits are one vector per image; half precision saves nothing useful


class FrozenBackboneHead(nn.Module):
    """`head(pre_logits(backbone(x)))`, run end to end on every call (`preload=False`).

    The timm model's `head` moves to `self.head` (the backbone keeps an `nn.Identity` in its
    place), so the trainable tensors keep their names (`head.*`) and the frozen backbone is a
    submodule whose parameters are all frozen, which `set_train_mode` keeps in eval mode.
    """

    preload = False
    # Only a model that has features ignores the image; this one always needs the image.
    image_free = False

    def __init__(self, backbone: nn.Module, *, settings: dict[str, Any]) -> None:
        super().__init__()
        head = backbone.get_classifier()
        if getattr(backbone, "head", None) is not head or not hasattr(backbone, "forward_head"):
            raise ValueError("a frozen-backbone head needs a timm ViT whose classifier is `head`")
        self.feature_dim = int(getattr(backbone, "head_hidden_size", backbone.num_features))
        # Read by callers that inspect the adapted model like the timm one (tests, profiles).
        self.embed_dim = int(backbone.embed_dim)
        self.num_features = int(backbone.num_features)
        self.num_classes = int(backbone.num_classes)
        backbone.head = nn.Identity()
        self.backbone: nn.Module | None = backbone
        self.head = head
        self.settings = settings

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's head input for images `x`: [B, feature_dim]."""
        backbone = self.backbone
        if backbone is None:
            raise RuntimeError(
                "the frozen backbone was released after preloading; features come from the cache"
            )
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def describe(self) -> dict[str, Any]:
        return {
            **self.settings,
            "preload": self.preload,
            "features": FEATURE,
            "feature_dim": self.feature_dim,
        }


class CachedFrozenBackboneHead(FrozenBackboneHead):
    """The same model speaking the frozen-feature protocol (`preload=True`): the harness caches
    `frozen_features` per image and trains `forward_with` on the cached rows."""

    preload = True
    image_free = True  # forward_with never reads the image: fit/predict need not build it
    cache_dtype = CACHE_DTYPE

    def feature_identity(self) -> dict[str, Any]:
        """What besides the images, backbone weights and input settings (which the harness adds)
        determines the features: nothing of the head, so `linear` and `mlp-head` share a cache."""
        return {"method": "frozen-head", "features": FEATURE}

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {FEATURE: (self.feature_dim,)}

    @torch.no_grad()
    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"pre_logits": [B, feature_dim]} for un-augmented images `x`."""
        return {FEATURE: self.pre_logits(x)}

    def forward_with(
        self, x: torch.Tensor | None, features: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Logits from the features alone; `x` is ignored (None when the loop skipped it)."""
        return self.head(features[FEATURE])

    def release_frozen(self) -> None:
        """Drop the backbone once its features are cached; the head stays."""
        self.backbone = None


def frozen_head(model: nn.Module, *, preload: bool, settings: dict[str, Any]) -> FrozenBackboneHead:
    """Wrap a frozen timm ViT whose `head` trains: cached features (`preload=True`) or not."""
    cls = CachedFrozenBackboneHead if preload else FrozenBackboneHead
    return cls(model, settings=settings)
