"""`bench profile`: steady-state cost of methods on one fixed synthetic batch, each method in a
fresh process so one method's allocator state cannot pollute the next one's figures.

Per method, in this order:
1. inference: the whole model (frozen parts included: new images have no cached features),
   `torch.inference_mode`, warm-up excluded; throughput and peak memory;
2. a frozen-feature method with `preload=True` (FPT+, and the linear/MLP heads) computes its
   batch's features, releases its frozen model, then trains from the features, as `bench run`
   does; this is the comparison the FPT+ paper's "3.18 % of full fine-tuning memory" makes;
3. training: warm-up steps (optimizer state allocated, kernels chosen, `torch.compile` done),
   then `repeats` rounds of `steps` timed steps; every figure is the median over the rounds.

Times are synchronised with the device (`bench.measure.StepTimer`). Memory is the `own_mb`
figure `bench run` records too (`bench.measure.memory`), measured from before the model was built
and over the timed steps: on GPU what PyTorch allocated at its peak (weights resident on the
device count, the finished preload does not), with the reserved and NVML figures beside it; on
CPU the process's peak resident memory beyond what it held once the libraries were warmed up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.errors import UserError

WARMUP_STEPS = 2
KIND = "profile"  # records of `bench profile` carry kind="profile"; grid records have none


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _rounds(step, *, batch_size: int, steps: int, repeats: int, device) -> dict[str, Any]:
    """`repeats` rounds of `steps` timed calls of `step()`; medians over rounds."""
    from bench.measure import StepTimer

    rounds = []
    for _ in range(repeats):
        timer = StepTimer(device, warmup=0)
        for _ in range(steps):
            with timer.step(batch_size):
                step()
        rounds.append(timer.summary())
    step_s = [r["step_time_median_s"] for r in rounds]
    rates = [r["throughput_img_s"] for r in rounds if r["throughput_img_s"]]
    median = _median(step_s)
    return {
        "step_time_median_s": median,
        "throughput_img_s": _median(rates),
        "rounds": len(rounds),
        "steps_per_round": steps,
        "step_time_round_medians_s": step_s,
        "spread": (max(step_s) - min(step_s)) / median if median else None,
    }


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
    repeats: int = 3,
    precision: str | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Profile `method` in this process (see the module docstring); returns its figures."""
    import gc

    import torch
    from torch import nn

    from bench.backbone_config import weightless
    from bench.backbones import create_backbone, method_img_size, resolve_backbone
    from bench.frozen_features import uses_frozen_features
    from bench.grid import resolve_precision
    from bench.harness import adapt
    from bench.measure import (
        GpuEnergy,
        MachineLoad,
        PeakMemory,
        StepMemory,
        batch1_latency,
        count_params,
        flops_per_image,
        memory_baseline,
    )
    from bench.measure.device import empty_cache, sync
    from bench.precision import autocast, backward_and_step, grad_scaler
    from bench.train import build_optimizer, set_train_mode, trainable_parameters
    from methods import get_method

    spec = get_method(method)
    params = {**spec.hparams, **(hparams or {})}
    dev = torch.device(device)
    precision = resolve_precision(precision or "auto", dev.type)
    size = method_img_size(spec.name, params, requested=img_size, backbone=backbone, data_size=None)
    # Weights do not change memory or time, so a randomly initialised backbone stands in.
    source = resolve_backbone(backbone, pretrained=False, weights=None)
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)
    baseline = memory_baseline(dev)  # the batch exists, the model not yet
    model = create_backbone(source, num_classes=num_classes, img_size=size)
    model, _, backbone_params, _ = adapt(model, spec.name, params)
    trainable = count_params(model, trainable_only=True)
    model.to(dev)
    memory: dict[str, Any] = {}
    # the bare backbone's shapes, for the method's overhead
    bare = weightless(lambda: create_backbone(source, num_classes=num_classes, img_size=size))
    cached = uses_frozen_features(model) and model.preload
    counted = {
        "flops": flops_per_image(model, img_size=size, device=dev, precision=precision,
                                 backbone=bare, merge=spec.merge, from_features=cached),
        "latency_b1": batch1_latency(model, img_size=size, device=dev, precision=precision),
    }  # fmt: skip

    # 1. inference, the whole model
    model.eval()
    infer_model = torch.compile(model) if compile else model
    t0 = time.perf_counter()

    @torch.inference_mode()
    def infer() -> None:
        with autocast(dev, precision):
            infer_model(x)

    # A compiled forward would recompile under the op counter: its phase peak is kept instead.
    infer_probe = StepMemory(dev, None if compile else baseline)
    for i in range(WARMUP_STEPS):
        with infer_probe.step(i):
            infer()
    infer_warmup_s = time.perf_counter() - t0
    with PeakMemory(dev, baseline_mb=baseline) as mem:
        inference = _rounds(infer, batch_size=batch_size, steps=steps, repeats=repeats, device=dev)
    memory["inference"] = mem.result
    infer_probe.apply(memory["inference"])

    # 2. frozen features, once
    features = None
    if cached:
        with torch.no_grad(), autocast(dev, precision):
            features = {k: v.float() for k, v in model.frozen_features(x).items()}
        model.release_frozen()
        gc.collect()
        empty_cache(dev)

    # 3. training
    opt = build_optimizer(model, spec.optimizer, spec.lr, spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    set_train_mode(model)
    forward = model.forward_with if cached else model.forward
    if compile:
        forward = torch.compile(forward)

    params = [p for _, p in trainable_parameters(model)]
    scaler = grad_scaler(dev, precision)  # fp16 trains with its loss scaler, as `bench.train`

    def step() -> None:
        with autocast(dev, precision):
            logits = forward(x, features) if cached else forward(x)
        backward_and_step(loss_fn(logits.float(), y), opt, params, grad_clip=0.0,
                          scaler=scaler)  # fmt: skip
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    train_probe = StepMemory(dev, None if compile else baseline)
    for i in range(WARMUP_STEPS):  # allocates optimizer state, warms kernels up, compiles
        with train_probe.step(i):
            step()
    sync(dev)
    train_warmup_s = time.perf_counter() - t0
    with PeakMemory(dev, baseline_mb=baseline) as mem, GpuEnergy(dev) as joules, \
            MachineLoad(dev) as load:  # fmt: skip
        train = _rounds(step, batch_size=batch_size, steps=steps, repeats=repeats, device=dev)
    memory["train"] = mem.result
    images = batch_size * steps * repeats
    train_probe.apply(memory["train"])
    compile_s = None
    if compile:
        # What the warm-up took beyond two steady steps: the compilation, reported apart.
        compile_s = max(0.0, train_warmup_s - WARMUP_STEPS * (train["step_time_median_s"] or 0.0))
        compile_s += max(
            0.0, infer_warmup_s - WARMUP_STEPS * (inference["step_time_median_s"] or 0.0)
        )
    return {
        "method": spec.name,
        "backbone": backbone,
        "img_size": size,
        "batch_size": batch_size,
        "device": str(dev),
        "precision": precision,
        "compile": compile,
        "compile_s": compile_s,
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / backbone_params,
        "preloaded_features": cached,
        "method_info": model.describe() if hasattr(model, "describe") else None,
        "train_memory_mb": memory["train"].get("own_mb"),
        "inference_memory_mb": memory["inference"].get("own_mb"),
        "train_memory_definition": memory["train"].get("own_definition"),
        "baseline_mb": baseline,
        "memory": memory,
        "energy": None
        if joules.joules is None
        else {"train_j": joules.joules, "train_j_per_image": joules.joules / images},
        "step": train,
        "conditions": load.result,
        **counted,
        "inference": inference,
        "warmup_s": {"train": train_warmup_s, "inference": infer_warmup_s},
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
    """`profile_method` in a fresh Python process. CUDA out of memory comes back as
    {"status": "oom", ...}; any other failure raises UserError with the child's last lines."""
    args = json.dumps({"method": method, **kwargs})
    # torch and NVML must number GPUs alike (bench.measure matches them by PCI bus id too).
    env = {**os.environ, "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profiling", args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise UserError(f"profiling {method} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_record(result: dict[str, Any], *, env: dict[str, Any], busy: Any) -> dict[str, Any]:
    """A record of one profiled method (kind "profile"), for the results folder and `bench
    report`. Its run id hashes what was measured, so a rerun of the same measurement replaces it."""
    from bench.record import SCHEMA

    identity = {k: result.get(k) for k in ("method", "backbone", "img_size", "batch_size",
                                            "device", "precision", "compile")}  # fmt: skip
    identity["hparams"] = result.get("hparams") or {}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "run_id": f"profile-{result['method']}-{result['img_size']}px-b{result['batch_size']}-"
        f"{str(result['device']).replace(':', '')}-{digest[:10]}",
        "status": result.get("status", "ok"),
        "error": result.get("error"),
        "profile": result,
        "gpu_other_processes": busy,
        "env": env,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _main() -> None:
    import torch

    kwargs = json.loads(sys.argv[1])
    try:
        result = profile_method(**kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        result = {**kwargs, "status": "oom",
                  "error": f"CUDA out of memory at batch size {kwargs.get('batch_size')}: {exc}"}  # fmt: skip
    result["hparams"] = kwargs.get("hparams") or {}
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
