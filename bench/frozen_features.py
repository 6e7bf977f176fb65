"""The frozen-feature protocol (FPT+, cached heads) and how the harness feeds such a model: its
frozen part runs once per un-augmented image, into a cache, or live at every step."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from bench.config import CellConfig
from bench.data import LoadedDataset
from bench.feature_cache import CachedFeatures, LiveFeatures, load_or_build
from bench.precision import autocast
from bench.train_free import training_free
from bench.transforms import Preprocess


@runtime_checkable
class FrozenFeatureModel(Protocol):
    """A model that splits into a frozen part, run on the un-augmented image, and a trainable
    part fed by it. To speak it, a method's module implements:

    - `frozen_features(x) -> dict[str, Tensor]`: the frozen part on a prepared batch
      [B, 3, H, W]; each value is [B, *shape] (under `torch.no_grad()`).
    - `forward_with(x, features) -> logits`: the trainable part; `x` is the (augmented) view,
      None when `image_free` is true.
    - `feature_shapes() -> dict[str, tuple]`: the per-image shape of each feature.
    - `feature_identity() -> dict`: what besides images, weights and input settings determines
      the features (the cache key's method part).
    - `release_frozen()`: drop the frozen part once its features are cached.
    - `preload: bool`: cache the features once per image (True) or run the frozen part live.
    - `cache_dtype: str`: the cache's storage dtype ("float32", "float16", ...).
    - `image_free: bool`: `forward_with` never reads `x` (a head on features), so the training
      loop builds no view; such a model's cache is exact only without augmentation.
    """

    preload: bool
    cache_dtype: str

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def forward_with(
        self, x: torch.Tensor | None, features: dict[str, torch.Tensor]
    ) -> torch.Tensor: ...
    def feature_shapes(self) -> dict[str, tuple[int, ...]]: ...
    def feature_identity(self) -> dict[str, Any]: ...
    def release_frozen(self) -> None: ...


def uses_frozen_features(model: Any) -> bool:
    return isinstance(model, FrozenFeatureModel)


def feature_identity(
    model: FrozenFeatureModel, cell: CellConfig, data: LoadedDataset, split: str, prep: Preprocess
) -> dict:
    """What determines one split's frozen features: data, weights, input and method settings."""
    identity = {
        "dataset": data.card.name,
        "split": split,
        # The split's pixels, not the dataset's fingerprint: few-shot views of one dataset share
        # their val and test features (labels never change a feature).
        "images": data.splits[split].images_digest,
        "backbone": cell.backbone,
        "pretrained": cell.pretrained,
        "weights_sha256": cell.weights_sha256,
        # A randomly initialised frozen model differs per seed; pretrained weights do not.
        "init_seed": None if cell.pretrained else cell.seed,
        "img_size": cell.img_size,
        "precision": cell.precision,
        "normalization": [list(prep.mean), list(prep.std)],
        "features": model.feature_identity(),
    }
    if not prep.eval_view.plain:
        # Features are computed on the eval view. Only a view other than the plain resize enters
        # the key, so caches built before the crop was read (all plain resizes) stay valid.
        identity["eval_view"] = dataclasses.asdict(prep.eval_view)
    return identity


def feature_mode(model: Any, cell: CellConfig) -> tuple[str | None, dict[str, Any] | None]:
    """How a cell's model gets its features: "preload" (a cache), "live" (the frozen part at
    every step) or None (not a frozen-feature model, or the cache would change what it trains
    on), with the record's `feature_cache` entry when there is one to write before training."""
    frozen = uses_frozen_features(model)
    if frozen and training_free(model):
        # nothing trains, so there is no augmented view to keep: the un-augmented features, as
        # the k-NN evaluations use them, are the cell whatever --augment says
        return "preload", None
    if frozen and getattr(model, "image_free", False) and cell.augment != "none":
        # A head on cached features never sees the augmented view: caching would silently
        # drop the cell's augmentation. The cache is an exact shortcut only without it.
        return None, {
            "used": False,
            "reason": f"--augment {cell.augment} makes a new view of every image each epoch; "
            "cached features would drop it (with --augment none the cache is used, exactly)",
        }
    if not frozen:
        no_preload = getattr(model, "preload", None) is False
        return None, {"used": False, "reason": "preload=false"} if no_preload else None
    return ("preload", None) if model.preload else ("live", {"used": False})


def live_features(model: FrozenFeatureModel, data: LoadedDataset, prep: Preprocess) -> dict:
    """The frozen part run at every step on the un-augmented batch, for every split."""
    live = LiveFeatures(model, prep.evaluation)
    return {split: live for split in data.splits}


def preload_features(
    model: FrozenFeatureModel,
    cell: CellConfig,
    data: LoadedDataset,
    prep: Preprocess,
    *,
    device: torch.device,
    on_preload: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute (or open) every split's frozen features once per image, on the un-augmented
    images, then release the frozen model: training never runs it. Returns the feature sources
    by split and the record's `feature_cache` entry."""
    sources, info = {}, {"used": True, "dtype": model.cache_dtype, "splits": {}}
    for split, part in data.splits.items():

        @torch.no_grad()
        def compute(start: int, end: int, _images=part.images) -> dict[str, torch.Tensor]:
            x = prep.evaluation(_images[start:end].to(device))
            with autocast(device, cell.precision):
                return model.frozen_features(x)

        entry = load_or_build(
            feature_identity(model, cell, data, split, prep),
            count=len(part),
            shapes=model.feature_shapes(),
            dtype=model.cache_dtype,
            compute=compute,
            batch_size=cell.batch_size,
            on_progress=(lambda done, total, _s=split: on_preload(_s, done, total))
            if on_preload
            else None,
        )
        sources[split] = CachedFeatures(entry.arrays, device)
        info["splits"][split] = {
            "path": str(entry.path),
            "images": len(part),
            "hit": entry.hit,
            "bytes": entry.bytes_on_disk,
            "seconds": entry.seconds,
            "rebuilt_because": entry.rebuilt_because,
        }
    info["bytes"] = sum(s["bytes"] for s in info["splits"].values())
    info["hit"] = all(s["hit"] for s in info["splits"].values())
    info["seconds"] = sum(s["seconds"] for s in info["splits"].values())
    model.release_frozen()
    if device.type != "cpu":
        from bench.measure.device import empty_cache  # here: bench.measure imports this module

        # Free the frozen model's device memory now (a full collection costs ~0.5 s, which is
        # the whole run for a small linear probe on CPU, where nothing waits for the memory).
        gc.collect()
        empty_cache(device)
    return sources, info
