"""Cells of training-free methods (k-NN, `methods/knn.py`): instead of training, the training
split's frozen features become the model's memory in one pass, and validation is scored once.
The one pass is the cell's training phase, timed step by step like any other; there is one
"epoch", so every selection rule keeps it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.train import FitResult, TrainSettings, _batch_sizes, make_loader, pin_memory, predict


def training_free(model: nn.Module) -> bool:
    """True for a model that remembers its training split instead of training (k-NN)."""
    return bool(getattr(model, "training_free", False))


@torch.inference_mode()
def _features(features, images: torch.Tensor, labels: torch.Tensor, st: TrainSettings,
              timer, memory) -> dict[str, torch.Tensor]:  # fmt: skip
    """Every image's frozen features, in the split's order, one timed step per batch."""
    loader = make_loader(images, labels, batch_size=st.batch_size, shuffle=False, seed=0,
                         pin_memory=pin_memory(st.device))  # fmt: skip
    batches = iter(loader)
    parts: dict[str, list[torch.Tensor]] = {}
    for i, n in enumerate(_batch_sizes(len(labels), st.batch_size)):
        step = timer.step(n) if timer is not None else contextlib.nullcontext()
        probe = memory.step(i) if memory is not None else contextlib.nullcontext()
        with probe, step:
            raw, _, index = next(batches)
            for name, value in features(index, raw.to(st.device, non_blocking=True)).items():
                parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def remember(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    score: Callable[[torch.Tensor, torch.Tensor], tuple[float, dict[str, float]]],
    features: tuple[Any, Any],
    timer=None,
    memory=None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """`fit` for a training-free model: remember the training split's features (`features`: the
    train and val feature sources), then score validation once."""
    train_features, val_features = features
    images, labels = train
    remembered = _features(train_features, images, labels, settings, timer, memory)
    model.remember(remembered, labels.to(settings.device), multilabel=settings.multilabel)
    logits, val_labels = predict(model, *val, batch_size=settings.batch_size,
                                 device=settings.device, precision=settings.precision,
                                 preprocess=settings.preprocess, features=val_features)  # fmt: skip
    value, metrics = score(logits, val_labels)
    entry = {"epoch": 0, "train_loss": None, "val": metrics}
    if on_epoch is not None:
        on_epoch({**entry, "lr": None})
    return FitResult(best_epoch=0, best_value=value, steps=len(_batch_sizes(len(labels),
                     settings.batch_size)), history=[entry], val_logits=logits,
                     val_labels=val_labels)  # fmt: skip
