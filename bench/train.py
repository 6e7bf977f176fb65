"""Training and prediction: one optimizer rule for every method, cosine schedule, selection on val."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from bench.config import CellConfig
from bench.option_values import DECAY_RULES
from bench.precision import MIN_LOSS_SCALE, autocast, backward_and_step, grad_scaler
from bench.selection import epoch_key
from bench.transforms import Preprocess

MOMENTUM = 0.9


class Diverged(RuntimeError):
    """The training loss became NaN or infinite, or (fp16) the gradients overflowed at every
    step until the loss scale fell below `MIN_LOSS_SCALE`."""

    def __init__(self, step: int, loss: float, why: str | None = None) -> None:
        super().__init__(why or f"non-finite training loss {loss} at step {step}")
        self.step = step
        self.loss = loss


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    # the selected epoch's validation logits (float32, CPU) and labels, in the split's order
    val_logits: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    # fp16 only (None otherwise): steps the loss scaler skipped on overflowing gradients, and
    # its scale at the end
    skipped_steps: int | None = None
    loss_scale: float | None = None


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, decay: str = "matrices"
) -> torch.optim.Optimizer:
    """Trainable tensors only. `decay` "matrices" is nanoGPT's rule: weight decay on matrices
    (ndim >= 2), none on biases, norms and other vectors; "all" decays every tensor."""
    if decay not in DECAY_RULES:
        raise ValueError(f"unknown decay rule {decay!r}; expected one of {DECAY_RULES}")
    params = [p for _, p in trainable_parameters(model)]
    decayed = (lambda p: True) if decay == "all" else (lambda p: p.ndim >= 2)
    groups = [
        {"params": [p for p in params if decayed(p)], "weight_decay": weight_decay},
        {"params": [p for p in params if not decayed(p)], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM)
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int):
    """Linear warm-up then half-cycle cosine to 0, stepped every iteration (timm's scheduler)."""
    from timm.scheduler import CosineLRScheduler

    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    # A run no longer than its warm-up (a 1-epoch halving rung) leaves one cosine step; timm
    # warns that such a cosine "has no effect", once per cell. That is the intended schedule.
    timm_log = logging.getLogger("timm.scheduler.cosine_lr")
    level = timm_log.level
    timm_log.setLevel(logging.ERROR)
    try:
        return CosineLRScheduler(
            optimizer,
            t_initial=max(total_steps - warmup_steps, 1),
            lr_min=0.0,
            warmup_t=warmup_steps,
            warmup_lr_init=0.0,
            warmup_prefix=True,
            t_in_epochs=False,
        )
    finally:
        timm_log.setLevel(level)


def schedule_position(step: int, steps_per_epoch: int, lr_step: str) -> int:
    """Where the schedule is read for the step after `step` updates: at that update ("iteration"),
    or at the start of its epoch ("epoch", MMClassification's by_epoch cosine: the rate holds
    through an epoch)."""
    if lr_step == "iteration":
        return step
    return step // steps_per_epoch * steps_per_epoch


def set_train_mode(model: nn.Module) -> None:
    """Train mode, except that every submodule whose parameters are all frozen stays in eval mode:
    a frozen backbone must not run dropout or drop-path (KMnP/vpt forces `enc.eval()` likewise)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def make_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of (images, labels, indices); the indices address per-image cached features.

    The splits are already decoded tensors in memory, so a batch is one indexing of each tensor
    by the batch's index list (a BatchSampler, no per-image collate) in this process: worker
    processes would only add pickling. The order is DataLoader's own: the permutation drawn from
    `seed`. `pin_memory` (set on GPU) lets the host-to-device copy run asynchronously.
    """
    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(images, labels, torch.arange(len(labels)))
    order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
    return DataLoader(
        data,
        sampler=BatchSampler(order, batch_size=batch_size, drop_last=False),
        batch_size=None,
        pin_memory=pin_memory,
        # The loader draws its base seed from the same generator before the sampler's
        # permutation, as DataLoader(shuffle=True, generator=...) does: the same order as ever.
        generator=generator,
    )


def pin_memory(device: torch.device) -> bool:
    """Pinned host memory speeds up copies to a CUDA GPU only (MPS shares the host's memory)."""
    return device.type == "cuda"


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of `make_loader`'s batches over n items (the last one may be short)."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def logits_of(
    model: nn.Module, x: torch.Tensor | None, raw: torch.Tensor, index: torch.Tensor, features
) -> torch.Tensor:
    """The model's logits; a frozen-feature model (FPT+) gets its features from `features`
    (a cache, or its frozen part run on the un-augmented `raw` batch) beside the view `x`
    (None for an image-free model, see `image_free`)."""
    if features is None:
        return model(x)
    return model.forward_with(x, features(index, raw))


def image_free(model: nn.Module, features) -> bool:
    """True when the model reads only its features (a head on cached features, `image_free`), so
    no view need be built: skipping it saves the per-step augmentation, and changes nothing else
    (the augmentation generator serves `prepare_batch` alone)."""
    return features is not None and bool(getattr(model, "image_free", False))


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    preprocess: Preprocess,
    timer=None,
    memory=None,
    features=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) for a whole split in order. `timer` (a StepTimer) and `memory` (a
    bench.measure.StepMemory) measure the steps."""
    model.eval()
    skip_view = image_free(model, features)
    outs = []
    loader = make_loader(images, labels, batch_size=batch_size, shuffle=False, seed=0,
                         pin_memory=pin_memory(device))  # fmt: skip
    batches = iter(loader)
    for i, n in enumerate(_batch_sizes(len(labels), batch_size)):
        step = timer.step(n) if timer is not None else contextlib.nullcontext()
        probe = memory.step(i) if memory is not None else contextlib.nullcontext()
        with probe, step:  # the fetch is part of the step: its time is the step's wall time
            raw, _, index = next(batches)
            raw = raw.to(device, non_blocking=True)
            x = None if skip_view else preprocess.evaluation(raw)
            with autocast(device, precision):
                logits = logits_of(model, x, raw, index, features)
            outs.append(logits.float().cpu())
    return torch.cat(outs), labels.clone()


@dataclass(frozen=True)
class TrainSettings:
    """How `fit` trains: the cell's optimisation settings, device and input pipeline."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    seed: int
    device: torch.device
    precision: str
    preprocess: Preprocess
    multilabel: bool = False
    decay: str = "matrices"
    lr_step: str = "iteration"
    select: str = "best"  # which epoch's weights are kept (bench.selection)

    @classmethod
    def for_cell(
        cls, cell: CellConfig, preprocess: Preprocess, *, multilabel: bool
    ) -> TrainSettings:
        return cls(
            epochs=cell.epochs,
            batch_size=cell.batch_size,
            optimizer=cell.optimizer,
            lr=cell.lr,
            weight_decay=cell.weight_decay,
            warmup_epochs=cell.warmup_epochs,
            grad_clip=cell.grad_clip,
            seed=cell.seed,
            decay=cell.decay,
            lr_step=cell.lr_step,
            select=cell.select,
            device=torch.device(cell.device),
            precision=cell.precision,
            preprocess=preprocess,
            multilabel=multilabel,
        )


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    score: Callable[[torch.Tensor, torch.Tensor], tuple[float, dict[str, float]]],
    timer=None,
    memory=None,
    on_step: Callable[[int, int, float, int], None] | None = None,
    features=None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train for `epochs`, keep the epoch whose validation score is best, and restore its weights.

    `score(logits, labels)` returns (primary value, all metrics) on the validation split; higher
    is better and ties keep the earlier epoch. The test split never reaches this function.
    `features` is (train, val) feature sources for a frozen-feature model, else None; a model
    that is `image_free` given features gets no augmented view (training augmentation is off).
    Multi-label targets (float multi-hot [N, L]) train with BCE-with-logits, as MedFMC and EPT
    do; single-label ones with cross-entropy. `timer` (a StepTimer) and `memory` (a
    bench.measure.StepMemory) measure the training steps. `on_epoch` gets each epoch's history
    entry with the learning rate the schedule reached (`lr`), for live trackers.
    """
    st = settings
    device, batch_size, epochs, grad_clip = st.device, st.batch_size, st.epochs, st.grad_clip
    train_features, val_features = features if features is not None else (None, None)
    loader = make_loader(*train, batch_size=batch_size, shuffle=True, seed=st.seed,
                         pin_memory=pin_memory(device))  # fmt: skip
    aug = torch.Generator().manual_seed(st.seed + 1)
    opt = build_optimizer(model, st.optimizer, st.lr, st.weight_decay, st.decay)
    total = epochs * len(loader)
    warmup = round(st.warmup_epochs * len(loader))
    sched = build_scheduler(opt, total_steps=total, warmup_steps=warmup)
    params = [p for _, p in trainable_parameters(model)]
    loss_fn = nn.BCEWithLogitsLoss() if st.multilabel else nn.CrossEntropyLoss()
    skip_view = image_free(model, train_features)
    scaler = grad_scaler(device, st.precision)

    best: dict[str, torch.Tensor] | None = None
    best_key = -math.inf
    values: list[float] = []  # the validation curve, signed so that higher is better
    result = FitResult(best_epoch=-1, best_value=-math.inf, steps=0)
    step, skipped = 0, 0
    for epoch in range(epochs):
        set_train_mode(model)
        loss_sum, seen = 0.0, 0
        batches = iter(loader)
        for n in _batch_sizes(len(train[1]), batch_size):
            ctx = timer.step(n) if timer is not None else contextlib.nullcontext()
            probe = memory.step(step) if memory is not None else contextlib.nullcontext()
            with probe, ctx:  # the fetch is part of the step: its time is the step's wall time
                raw, y, index = next(batches)
                raw = raw.to(device, non_blocking=True)
                x = None if skip_view else st.preprocess(raw, train=True, generator=aug)
                y = y.to(device, non_blocking=True)
                with autocast(device, st.precision):
                    logits = logits_of(model, x, raw, index, train_features)
                    loss = loss_fn(logits.float(), y)
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(step, value)
                stepped = backward_and_step(loss, opt, params, grad_clip=grad_clip,
                                            scaler=scaler)  # fmt: skip
                opt.zero_grad(set_to_none=True)
            if not stepped:
                skipped += 1
                if scaler.get_scale() < MIN_LOSS_SCALE:
                    raise Diverged(step, value, "fp16 gradients overflowed until the loss "
                                   f"scale fell below {MIN_LOSS_SCALE:g} at step {step}; use "
                                   "--precision fp32 (or bf16 on a GPU of compute capability "
                                   "8.0+)")  # fmt: skip
            step += 1
            sched.step_update(num_updates=schedule_position(step, len(loader), st.lr_step))
            loss_sum += value * len(y)
            seen += len(y)
            if on_step is not None:
                on_step(step, total, value, epoch)
        # Run the iterator to its end as a for-loop would: RandomSampler draws one more
        # permutation from the seeded generator on exhaustion, and the next epoch's order
        # depends on it.
        if next(batches, None) is not None:
            raise RuntimeError("make_loader yielded more batches than _batch_sizes counted")
        logits, labels = predict(model, *val, batch_size=batch_size, device=device,
                                 precision=st.precision, preprocess=st.preprocess,
                                 features=val_features)  # fmt: skip
        value, metrics = score(logits, labels)
        result.history.append(
            {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val": metrics}
        )
        if on_epoch is not None:
            on_epoch({**result.history[-1], "lr": opt.param_groups[0]["lr"]})
        values.append(value)
        key = epoch_key(st.select, values)
        if best is None or key > best_key:
            best_key = key
            result.best_epoch, result.best_value = epoch, value
            result.val_logits, result.val_labels = logits, labels
            best = {n: p.detach().clone() for n, p in trainable_parameters(model)}
    result.steps = step
    if scaler is not None:
        result.skipped_steps, result.loss_scale = skipped, scaler.get_scale()
    if best is not None:
        with torch.no_grad():
            for n, p in trainable_parameters(model):
                p.copy_(best[n])
    return result
