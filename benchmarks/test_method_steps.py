"""One training step of every registered method on a tiny ViT, so regressions show up.

Each benchmark times forward, loss, backward, optimizer step and zero_grad, as `bench profile`
steps a method (`bench.profiling.profile_method`): a randomly initialised backbone, one fixed
batch, the method's own optimizer and input size, and for a frozen-feature method (FPT+/FPT) with
`preload` the features computed once and the frozen model released, so only the trainable part
runs. Timings are reported by pytest-benchmark (group "train-step") and never asserted; the
assertions are on behaviour: the loss is finite, some trainable tensor moved, no frozen one did.
"""

from __future__ import annotations

import gc

import pytest
import torch
from _tiny import method_hparams, method_input_size, tiny_vit
from torch import nn

from bench.frozen_features import uses_frozen_features
from bench.harness import adapt
from bench.train import build_optimizer, set_train_mode
from bench.train_free import training_free
from methods import get_method, list_methods

NATIVE, PATCH, CLASSES, BATCH = 32, 8, 5, 8
WARMUP_STEPS = 2  # allocate the optimizer state and warm kernels up before anything is timed


@pytest.mark.parametrize("method", list_methods())
def test_train_step(benchmark, method: str) -> None:
    spec = get_method(method)
    hparams = method_hparams(method)
    size = method_input_size(method, hparams, native=NATIVE, patch=PATCH)
    backbone = tiny_vit(img_size=size, patch_size=PATCH, num_classes=CLASSES)
    model, *_ = adapt(backbone, method, hparams)
    if training_free(model):
        pytest.skip(f"{method} trains nothing: there is no training step to time")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    features = None
    if uses_frozen_features(model) and model.preload:
        with torch.no_grad():
            features = model.frozen_features(x)
        model.release_frozen()
        gc.collect()

    opt = build_optimizer(model, spec.optimizer, spec.lr, spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    set_train_mode(model)

    def step() -> torch.Tensor:
        logits = model(x) if features is None else model.forward_with(x, features)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(WARMUP_STEPS):
        step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    benchmark.group = "train-step"
    benchmark.extra_info.update(
        img_size=size,
        batch_size=BATCH,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        preloaded_features=features is not None,
    )
    loss = benchmark.pedantic(step, rounds=20, warmup_rounds=1)

    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    moved = [n for n, p in params.items() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved, f"{method}: no trainable tensor changed after a step"
    frozen_moved = [
        n for n, p in params.items() if not p.requires_grad and not torch.equal(p, before[n])
    ]
    assert not frozen_moved, f"{method}: frozen tensors changed: {frozen_moved[:5]}"
