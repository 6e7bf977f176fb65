"""`bench profile`: steady-state training cost of methods on one fixed synthetic batch, each method
in a fresh process so one method's allocator state cannot pollute the next one's figures.

Training memory is what the method needs while it trains: on GPU the caching allocator's peak
(`max_memory_allocated`, reset after warm-up, so weights resident on the device count and
preloading does not); on CPU the process's peak RSS over the timed steps minus the RSS measured
once the libraries are imported and warmed up on a throwaway block, before any model existed. A frozen-feature method (FPT+) with
`preload=True` computes its batch's features first, releases its frozen model, then trains from
the features, as it does in `bench run`; this is the comparison the FPT+ paper's "3.18 % of full
fine-tuning memory" makes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.errors import UserError

WARMUP_STEPS = 2


def profile_method(
    method: str,
    *,
    backbone: str,
    img_size: int | None,
    batch_size: int,
    steps: int,
    device: str,
    num_classes: int = 7,
    hparams: dict[str, Any] | None = None,
    baseline_rss_mb: float | None = None,
) -> dict[str, Any]:
    """Train `method` for `steps` timed steps (after warm-up) on one synthetic batch, in this
    process; returns its memory and step-time figures."""
    import gc

    import torch
    from torch import nn

    from bench.backbones import create_backbone, method_img_size, resolve_backbone
    from bench.harness import adapt, uses_frozen_features
    from bench.measure import PeakMemory, StepTimer, count_params
    from bench.train import autocast, build_optimizer, set_train_mode
    from methods import get_method

    spec = get_method(method)
    params = {**spec.hparams, **(hparams or {})}
    dev = torch.device(device)
    precision = "bf16" if dev.type == "cuda" else "fp32"
    size = method_img_size(spec.name, params, requested=img_size, backbone=backbone, data_size=None)
    # Weights do not change memory or time, so a randomly initialised backbone stands in.
    source = resolve_backbone(backbone, pretrained=False, weights=None)
    torch.manual_seed(0)
    model = create_backbone(source, num_classes=num_classes, img_size=size)
    model, _, backbone_params, _ = adapt(model, spec.name, params)
    trainable = count_params(model, trainable_only=True)
    model.to(dev)
    x = torch.randn(batch_size, 3, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)
    features = None
    cached = uses_frozen_features(model) and model.preload
    if cached:
        with torch.no_grad(), autocast(dev, precision):
            features = {k: v.float() for k, v in model.frozen_features(x).items()}
        model.release_frozen()
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    opt = build_optimizer(model, spec.optimizer, spec.lr, spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    set_train_mode(model)

    def step() -> None:
        with autocast(dev, precision):
            logits = model.forward_with(x, features) if cached else model(x)
        loss_fn(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):  # allocates optimizer state and warms kernels up
        step()
    timer = StepTimer(dev, warmup=0)
    with PeakMemory(dev) as mem:
        for _ in range(steps):
            with timer.step(batch_size):
                step()
    result = mem.result
    if dev.type == "cuda":
        train_mb = result["peak_allocated_mb"]
    else:
        train_mb = result["peak_rss_mb"] - (baseline_rss_mb or 0.0)
    return {
        "method": spec.name,
        "backbone": backbone,
        "img_size": size,
        "batch_size": batch_size,
        "device": str(dev),
        "precision": precision,
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / backbone_params,
        "preloaded_features": cached,
        "method_info": model.describe() if hasattr(model, "describe") else None,
        "train_memory_mb": train_mb,
        "train_memory_definition": (
            "torch.cuda.max_memory_allocated over the timed steps"
            if dev.type == "cuda"
            else "peak RSS over the timed steps minus the RSS of the warmed-up libraries"
        ),
        "memory": result,
        "step": timer.summary(),
    }


def common_img_size(methods: list[str], backbone: str, hparams: dict[str, dict]) -> int:
    """One input size for every profiled method: the largest any method's rule asks for (FPT+'s
    LPM resolution), so full fine-tuning is measured at the resolution FPT+'s frozen model sees."""
    from bench.backbones import method_img_size

    return max(
        method_img_size(m, hparams.get(m, {}), requested=None, backbone=backbone, data_size=None)
        for m in methods
    )


def profile_in_subprocess(method: str, **kwargs: Any) -> dict[str, Any]:
    """`profile_method` in a fresh Python process; raises UserError with its stderr on failure."""
    args = json.dumps({"method": method, **kwargs})
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profile", args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise UserError(f"profiling {method} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warmed_baseline_rss_mb() -> float | None:
    """RSS once torch, timm and the suite are imported and a throwaway ViT block has run forward
    and backward: the libraries' lazily loaded kernels and buffers are then in place, and what
    grows beyond this is the method's own training memory."""
    import timm  # noqa: F401
    import torch
    from timm.models.vision_transformer import Block

    import bench.harness  # noqa: F401
    import methods  # noqa: F401
    from bench.measure import _current_rss_mb

    block = Block(dim=64, num_heads=2)
    block(torch.randn(2, 17, 64, requires_grad=True)).sum().backward()
    torch.optim.AdamW(block.parameters()).step()
    del block
    return _current_rss_mb()


def _main() -> None:
    baseline = _warmed_baseline_rss_mb()
    kwargs = json.loads(sys.argv[1])
    result = profile_method(**kwargs, baseline_rss_mb=baseline)
    result["baseline_rss_mb"] = baseline
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
