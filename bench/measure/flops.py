"""FLOPs per image of an adapted model (inference, one training step, after merging, and the
unadapted backbone's), counted from shapes by torch's FlopCounterMode: the same on every machine.

What is counted: matrix multiplications, convolutions and attention, at 2 FLOPs per
multiply-add (`torch.utils.flop_counter`). Elementwise ops, norms, softmax, interpolation and
FFTs (FourierFT, C3A, VFPT's Fourier prompts) are not: they are a small share of a ViT, and
leaving them out is the convention the published GFLOPs of ViTs follow.

A model's FLOPs are affine in the batch size, a + b·B: b is the work per image, a the work done
once per call whatever the batch (a tuner that rebuilds its weight update at every forward, as
HRA's Householder product or BOFT's rotations do). Counting one and two images separates them,
so a per-image figure does not charge one image with what a whole batch shares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from bench.frozen_features import uses_frozen_features
from bench.measure.device import as_device
from bench.measure.probe import probe_image, untouched
from bench.precision import autocast
from bench.train import set_train_mode

GIGA = 1e9
WHOLE_MODEL = "forward and backward of the whole model"
FROM_FEATURES = (
    "forward_with and backward from cached features; the frozen part runs once per image, "
    "not per epoch (feature_gflops)"
)


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# torch counts its CUDA attention kernels but not the fused CPU one, which would make attention
# free on CPU: count it with torch's own attention formula, so every device gives one number.
_CPU_ATTENTION = {
    getattr(torch.ops.aten, name): formula
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_attention_backward),
    )
    if hasattr(torch.ops.aten, name)
}


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of everything `run()` computes, by FlopCounterMode (see the module docstring)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        run()
    return counter.get_total_flops()


def _per_image(count_at: Callable[[torch.Tensor], int], x: torch.Tensor) -> tuple[int, int]:
    """(FLOPs per image, FLOPs per call) from counts on the first image of `x` and on both."""
    one, two = count_at(x[:1]), count_at(x)
    return two - one, 2 * one - two


def _forward_flops(
    model: nn.Module, x: torch.Tensor, device: torch.device, precision: str
) -> tuple[int, int]:
    """One eval-mode forward, per image and per call (the model's modes restored afterwards).

    Autograd stays on although nothing is differentiated (the count is the same): under no_grad a
    view of a trainable tensor (VPT's expanded prompts) requires grad without a grad_fn, which
    FlopCounterMode's module tracker cannot hook."""

    def forward(images: torch.Tensor) -> int:
        def run() -> None:
            with autocast(device, precision):
                model(images)

        return count_flops(run)

    with untouched(model, device):
        model.eval()
        return _per_image(forward, x)


def _feature_flops(
    model: nn.Module, x: torch.Tensor, device: torch.device, precision: str
) -> tuple[int, int]:
    """A frozen-feature model's frozen part, as the feature cache runs it, per image and call."""

    def frozen(images: torch.Tensor) -> int:
        def run() -> None:
            with torch.no_grad(), autocast(device, precision):
                model.frozen_features(images)

        return count_flops(run)

    with untouched(model, device):
        model.eval()
        return _per_image(frozen, x)


def _train_flops(
    model: nn.Module, x: torch.Tensor, device: torch.device, precision: str, from_features: bool
) -> tuple[int, int]:
    """One training step's forward and backward (cross-entropy on the logits), as `bench.train`
    runs it, per image and per step; with `from_features`, `forward_with` on features computed
    outside the count. Every `.grad` is what it was before (None for a model between steps)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in params]
    image_free = bool(getattr(model, "image_free", False))  # as the training loop: no view

    def step(images: torch.Tensor) -> int:
        features = None
        if from_features:
            with torch.no_grad(), autocast(device, precision):
                features = model.frozen_features(images)
        view = None if image_free else images

        def run() -> None:
            with autocast(device, precision):
                logits = model.forward_with(view, features) if from_features else model(images)
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            loss = F.cross_entropy(logits.float(), target)
            # backward(), not autograd.grad(): the counter's module tracker hooks the graph in a
            # way autograd.grad refuses. A model with nothing to train costs its forward.
            if loss.requires_grad:
                loss.backward()

        for p in params:  # set aside, not accumulated into: a caller's gradients stay its own
            p.grad = None
        return count_flops(run)

    try:
        with untouched(model, device):
            set_train_mode(model)
            return _per_image(step, x)
    finally:
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def flops_per_image(
    model: nn.Module,
    *,
    img_size: int,
    device: torch.device | str,
    precision: str = "fp32",
    backbone: nn.Module | None = None,
    merge: Callable[[nn.Module], nn.Module] | None = None,
    from_features: bool | None = None,
) -> dict[str, Any]:
    """GFLOPs per image of `model` (on `device`), counted on probe images of `img_size`.

    - `inference_gflops`: the whole model's eval forward, as trained (a frozen-feature model's
      frozen part included: a new image has no cached features);
    - `train_gflops`: one training step's forward and backward; `train_counts` says of what.
      `from_features` (default: the model's `preload`, for a frozen-feature model) counts
      `forward_with` on precomputed features, as a cell training from the feature cache runs,
      and `feature_gflops` the frozen part, which then runs once per image (None otherwise);
    - `inference_fixed_gflops`, `train_fixed_gflops`: what each forward or step costs on top,
      whatever its batch size (see the module docstring): a batch of B costs
      B · per image + fixed. 0 for most methods;
    - `merged_inference_gflops`: the forward after `merge` (the method's `MethodSpec.merge`,
      applied to a deep copy) folded the adaptation into the backbone; None without one;
    - `backbone_gflops`: `backbone`'s forward, an unadapted model of the same architecture at
      `img_size` (its weights do not matter: one built under `torch.device("meta")` costs no
      memory); None without one;
    - `inference_overhead_gflops`: what the method adds per image at deployment, (merged if
      any, else inference) - backbone; 0 for a merged LoRA; None without a backbone.

    The frozen part must not have been released yet (`release_frozen`). The model is left as it
    was: parameters, gradients, train/eval modes and the RNG states (`untouched`).
    """
    dev = as_device(device)
    x = probe_image(img_size, dev, batch=2)
    frozen = uses_frozen_features(model)
    cached = frozen and bool(model.preload if from_features is None else from_features)
    if from_features and not frozen:
        raise ValueError("from_features needs a frozen-feature model (bench.frozen_features)")
    inference, inference_fixed = _forward_flops(model, x, dev, precision)
    train, train_fixed = _train_flops(model, x, dev, precision, cached)
    features = _feature_flops(model, x, dev, precision)[0] if cached else None
    merged = None
    if merge is not None:
        merged = _forward_flops(merge(copy.deepcopy(model)), x, dev, precision)[0]
    base = None
    if backbone is not None:
        where = _device_of(backbone)
        base = _forward_flops(backbone, x.to(where), where, precision)[0]
    deployed = inference if merged is None else merged

    def giga(flops: int | None) -> float | None:
        return None if flops is None else flops / GIGA

    return {
        "img_size": img_size,
        "inference_gflops": giga(inference),
        "inference_fixed_gflops": giga(inference_fixed),
        "train_gflops": giga(train),
        "train_fixed_gflops": giga(train_fixed),
        "train_counts": FROM_FEATURES if cached else WHOLE_MODEL,
        "feature_gflops": giga(features),
        "merged_inference_gflops": giga(merged),
        "backbone_gflops": giga(base),
        "inference_overhead_gflops": None if base is None else giga(deployed - base),
    }
