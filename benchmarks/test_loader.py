"""Loader throughput next to model throughput ("data loading never the bottleneck").

The loader side is what `fit` does per batch before the model runs: `make_loader` (a
TensorDataset over uint8 images, shuffled) and `prepare_batch` with a training augmentation,
timed per batch with a StepTimer. The model side is one full fine-tuning step (forward, loss,
backward, AdamW step) of a small ViT at the same input size and batch size. The ratio
loader/model img/s above 1 means the model, not the loader, limits training; on a real
backbone the model is far slower than this small one, so the ratio here is a lower bound.
Figures are printed and stored in `benchmark.extra_info`, never asserted.
"""

from __future__ import annotations

import functools

import pytest
import torch
from _tiny import MEAN, STD, random_split, report, tiny_vit
from torch import nn

from bench.harness import adapt
from bench.measure import StepTimer
from bench.train import build_optimizer, make_loader, set_train_mode
from bench.transforms import prepare_batch
from methods import get_method

N_IMAGES, BATCH, CLASSES = 256, 32, 5
MODEL_STEPS, WARMUP_STEPS = 4, 1
# The demo-vit shape (embed 96, depth 4, 6 heads, MLP ratio 2); patch 8 at 64 px and 16 at
# 224 px keep the token count (64, 196) at what a ViT-B/16 sees at 128 and 224 px.
MODEL = dict(embed_dim=96, depth=4, num_heads=6, mlp_ratio=2.0, num_classes=CLASSES)
PATCH = {64: 8, 224: 16}


@functools.cache
def model_throughput(size: int) -> dict[str, float]:
    """Img/s and ms/step of a full fine-tuning step at `size` px (measured once per size)."""
    spec = get_method("full")
    model, *_ = adapt(tiny_vit(img_size=size, patch_size=PATCH[size], **MODEL), "full", {})
    opt = build_optimizer(model, spec.optimizer, spec.lr, spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    set_train_mode(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    timer = StepTimer("cpu", warmup=WARMUP_STEPS)
    for _ in range(WARMUP_STEPS + MODEL_STEPS):
        with timer.step(BATCH):
            loss_fn(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    s = timer.summary()
    return {"img_s": s["throughput_img_s"], "ms_per_step": 1e3 * s["step_time_median_s"]}


@pytest.mark.parametrize("augment", ["rrc-flip", "none"])
@pytest.mark.parametrize("size", [64, 224])
def test_loader_throughput(benchmark, size: int, augment: str) -> None:
    """One epoch through make_loader + prepare_batch; prints loader vs model img/s."""
    images, labels = random_split(N_IMAGES, size, num_classes=CLASSES)
    loader = make_loader(images, labels, batch_size=BATCH, shuffle=True, seed=0)
    aug = torch.Generator().manual_seed(1)
    timer = StepTimer("cpu", warmup=1)  # the first batch pays the first-call allocations
    shapes: list[tuple[int, ...]] = []

    def epoch() -> None:
        it = iter(loader)
        for _ in range(len(loader)):
            # The fetch is inside the timed span: here it is part of the cost being measured.
            with timer.step(BATCH):
                raw, _, _ = next(it)
                x = prepare_batch(
                    raw,
                    img_size=size,
                    mean=MEAN,
                    std=STD,
                    train=True,
                    generator=aug,
                    augment=augment,
                )
            shapes.append(tuple(x.shape))

    benchmark.group = "loader"
    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)

    # Behaviour, not speed: every image went through at the model's input size.
    assert sum(s[0] for s in shapes) % N_IMAGES == 0
    assert {s[1:] for s in shapes} == {(3, size, size)}
    loader_img_s = timer.summary()["throughput_img_s"]
    model = model_throughput(size)
    figures = {
        "loader_img_s": loader_img_s,
        "model_train_img_s": model["img_s"],
        "model_ms_per_step": model["ms_per_step"],
        "loader_over_model": loader_img_s / model["img_s"],
    }
    benchmark.extra_info.update(figures, size=size, augment=augment, batch_size=BATCH)
    report(f"loader vs model, {size} px, augment {augment}, batch {BATCH}", figures)
