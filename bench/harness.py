"""One cell, start to finish: build, freeze, adapt, count, train, select on val, test once, measure.

This is the only module that knows the order of these steps. It returns a record whatever
happens; the runner decides what to do with it.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.backbones import BackboneSource, create_backbone
from bench.config import CellConfig
from bench.data import DEMO_NOTICE, LoadedDataset
from bench.errors import UserError
from bench.feature_cache import LiveFeatures
from bench.metric_table import HIGHER_IS_BETTER
from bench.metrics import compute_metrics, reliability_bins
from bench.records import SCHEMA
from bench.train import Diverged, autocast, fit, image_free, predict
from bench.transforms import prepare_batch

log = logging.getLogger(__name__)


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Bit-reproducible on CPU; on GPU the fast non-deterministic kernels stay (speed is measured).
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)


def adapt(model, method: str, hparams: dict[str, Any]):
    """Count the frozen backbone, then apply `method`; returns (adapted model, head,
    backbone parameters without the head, head parameters). Bad values raise UserError."""
    from bench.measure import count_params
    from methods import get_method

    head_params = count_params(model.get_classifier())
    backbone_params = count_params(model) - head_params
    try:
        adapted = get_method(method).build(model, **hparams)
    except (ValueError, TypeError) as exc:
        raise UserError(f"method {method!r} with {hparams}: {exc}") from exc
    if not any(p.requires_grad for p in adapted.parameters()):
        raise UserError(f"method {method!r} left no parameter trainable")
    # A method may replace the head (an MLP head) or wrap the model; wrappers expose
    # get_classifier() so "trainable without the head" stays meaningful.
    head = (
        adapted.get_classifier() if hasattr(adapted, "get_classifier") else model.get_classifier()
    )
    return adapted, head, backbone_params, head_params


def build_model(cell: CellConfig, source: BackboneSource, num_classes: int):
    """The frozen backbone, adapted by the cell's method; also returns the pre-method counts
    and the backbone's pretrained config (read before any wrapper hides it)."""
    model = create_backbone(source, num_classes=num_classes, img_size=cell.img_size)
    return (*adapt(model, cell.method, cell.hparams), dict(model.pretrained_cfg))


def trainable_counts(method_names: list[str], *, backbone: str, num_classes: int) -> dict[str, str]:
    """Trainable parameters of each method with its default hyperparameters on `backbone`
    (built without weights; counts do not depend on them), formatted with the % of the backbone."""
    from bench.backbones import method_img_size, resolve_backbone
    from bench.measure import count_params
    from methods import get_method

    source = resolve_backbone(backbone, pretrained=False, weights=None)
    out = {}
    for name in method_names:
        hparams = get_method(name).hparams
        size = method_img_size(name, hparams, requested=None, backbone=backbone, data_size=None)
        model = create_backbone(source, num_classes=num_classes, img_size=size)
        try:
            adapted, _, backbone_params, _ = adapt(model, name, hparams)
        except UserError as exc:
            out[name] = f"n/a ({exc})"
            continue
        trainable = count_params(adapted, trainable_only=True)
        out[name] = f"{trainable:,} ({100 * trainable / backbone_params:.3g} %)"
    return out


def compile_forward(model) -> None:
    """`torch.compile` the forward the harness calls (`forward_with` for a frozen-feature model),
    on the instance, so parameter names, state dicts and train/eval switching are untouched."""
    name = "forward_with" if uses_frozen_features(model) else "forward"
    setattr(model, name, torch.compile(getattr(model, name)))


def uses_frozen_features(model) -> bool:
    """A frozen-feature model (FPT+) splits into a frozen part run on the un-augmented image and a
    trainable part; the harness feeds the latter from a cache or from the live frozen part."""
    return hasattr(model, "frozen_features") and hasattr(model, "forward_with")


def feature_identity(model, cell: CellConfig, data: LoadedDataset, split: str, mean, std) -> dict:
    """What determines one split's frozen features: data, weights, input and method settings."""
    return {
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
        "normalization": [list(mean), list(std)],
        "features": model.feature_identity(),
    }


def preload_features(
    model,
    cell: CellConfig,
    data: LoadedDataset,
    *,
    mean,
    std,
    device: torch.device,
    on_preload: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute (or open) every split's frozen features once per image, on the un-augmented
    images, then release the frozen model: training never runs it. Returns the feature sources
    by split and the record's `feature_cache` entry."""
    from bench.feature_cache import CachedFeatures, load_or_build

    prepare = functools.partial(prepare_batch, img_size=cell.img_size, mean=mean, std=std)
    sources, info = {}, {"used": True, "dtype": model.cache_dtype, "splits": {}}
    for split, part in data.splits.items():

        @torch.no_grad()
        def compute(start: int, end: int, _images=part.images) -> dict[str, torch.Tensor]:
            x = prepare(_images[start:end].to(device), train=False)
            with autocast(device, cell.precision):
                return model.frozen_features(x)

        entry = load_or_build(
            feature_identity(model, cell, data, split, mean, std),
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
    if device.type == "cuda":
        # Free the frozen model's device memory now (a full collection costs ~0.5 s, which is
        # the whole run for a small linear probe on CPU, where nothing waits for the memory).
        gc.collect()
        torch.cuda.empty_cache()
    return sources, info


def base_record(cell: CellConfig, data: LoadedDataset, source: BackboneSource) -> dict[str, Any]:
    card = data.card
    demo = card.synthetic or source.is_demo
    return {
        "schema": SCHEMA,
        "run_id": cell.run_id,
        "status": None,
        "error": None,
        "demo": demo,
        "notice": DEMO_NOTICE if demo else None,
        "config": cell.to_dict(),
        "dataset": {
            "name": card.name,
            "task": card.task,
            "num_classes": data.num_classes,
            "classes": list(card.classes),
            "primary_metric": card.primary_metric,
            "sizes": {k: len(v) for k, v in data.splits.items()},
            "fingerprint": data.fingerprint,
            "synthetic": card.synthetic,
            # carved val, few-shot sample (indices or file names): enough to audit and rerun
            "protocol": data.protocol,
        },
        "backbone": {
            "name": source.name,
            "pretrained": source.pretrained,
            "weights": str(source.weights) if source.weights else None,
            "weights_sha256": source.weights_sha256,
        },
    }


def run_cell(
    cell: CellConfig,
    data: LoadedDataset,
    source: BackboneSource,
    *,
    on_step: Callable[[int, int, float, int], None] | None = None,
    on_preload: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run one cell and return its record (status ok, failed, oom or diverged)."""
    from bench.measure import PeakMemory, StepTimer, Stopwatch, param_report

    # A search trial sees train and val only; it is scored on val and never tested.
    trial = cell.role == "trial"
    if trial:
        data = data.sealed()
    record = base_record(cell, data, source)
    record["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    device = torch.device(cell.device)
    if device.type == "cuda":
        from bench.measure import gpu_busy_processes

        # Another process on the GPU skews time and NVML memory: say so in the record (None:
        # NVML unavailable, so nobody checked).
        record["gpu_other_processes"] = gpu_busy_processes(device.index or 0)
    t0 = time.perf_counter()
    watch = Stopwatch(device)
    try:
        seed_everything(cell.seed, device)
        with watch.phase("build"):
            model, head, backbone_params, head_params, cfg = build_model(
                cell, source, data.num_classes
            )
            record["params"] = param_report(backbone_params, head_params, model, head)
            if hasattr(model, "paper_trainable_pct"):
                # The method's paper states its fraction by its own formula; keep both.
                record["params"]["paper_trainable_pct"] = model.paper_trainable_pct(
                    record["params"]["trainable_params"]
                )
            if hasattr(model, "describe"):
                record["method_info"] = model.describe()
            model.to(device)
            if cell.compile:
                compile_forward(model)
        # Normalisation follows the backbone's pretraining, read before any wrapper hid it.
        mean, std = cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3)
        record["normalization"] = {"mean": list(mean), "std": list(std)}
        task, primary = data.card.task, data.card.primary_metric
        sign = 1.0 if HIGHER_IS_BETTER.get(primary, True) else -1.0

        def score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
            metrics = compute_metrics(logits, labels, task)
            return sign * metrics[primary], metrics

        common = dict(
            device=device, precision=cell.precision, img_size=cell.img_size, mean=mean, std=std
        )
        memory: dict[str, Any] = {}
        sources: dict[str, Any] | None = None
        frozen = uses_frozen_features(model)
        if frozen and getattr(model, "image_free", False) and cell.augment != "none":
            # A head on cached features never sees the augmented view: caching would silently
            # drop the cell's augmentation. The cache is an exact shortcut only without it.
            frozen = False
            record["feature_cache"] = {
                "used": False,
                "reason": f"--augment {cell.augment} makes a new view of every image each epoch; "
                "cached features would drop it (with --augment none the cache is used, exactly)",
            }
        elif not frozen and getattr(model, "preload", None) is False:
            record["feature_cache"] = {"used": False, "reason": "preload=false"}
        if frozen:
            if model.preload:
                with PeakMemory(device) as mem_preload, watch.phase("preload"):
                    sources, record["feature_cache"] = preload_features(
                        model, cell, data, mean=mean, std=std, device=device, on_preload=on_preload
                    )
                memory["preload"] = mem_preload.result
            else:
                live = LiveFeatures(
                    model,
                    functools.partial(
                        prepare_batch, img_size=cell.img_size, mean=mean, std=std, train=False
                    ),
                )
                sources = {split: live for split in data.splits}
                record["feature_cache"] = {"used": False}
        train_timer = StepTimer(device)
        with PeakMemory(device) as mem_train, watch.phase("train"):
            result = fit(
                model,
                (data.splits["train"].images, data.splits["train"].labels),
                (data.splits["val"].images, data.splits["val"].labels),
                epochs=cell.epochs,
                batch_size=cell.batch_size,
                optimizer=cell.optimizer,
                lr=cell.lr,
                weight_decay=cell.weight_decay,
                warmup_epochs=cell.warmup_epochs,
                grad_clip=cell.grad_clip,
                seed=cell.seed,
                score=score,
                timer=train_timer,
                on_step=on_step,
                features=(sources["train"], sources["val"]) if sources else None,
                multilabel=data.card.multilabel,
                augment=cell.augment,
                **common,
            )
        best_val = result.history[result.best_epoch]["val"]
        training = {
            # What the training views really were: a head on cached features gets none.
            "augment_applied": "none"
            if image_free(model, sources["train"] if sources else None)
            else cell.augment,
            "best_epoch": result.best_epoch,
            "epochs": cell.epochs,
            "steps": result.steps,
            "history": result.history,
        }
        if trial:
            record.update(
                status="trial",
                trial=trial_result("ok", primary, best_val.get(primary)),
                metrics={"primary_metric": primary, "primary": None, "test": {}, "val": best_val},
                training=training,
            )
            record["cost"] = {
                "train_step": train_timer.summary(),
                "memory": {**memory, "train": mem_train.result},
            }
            return _finish(record, t0, watch)
        # The test split is read exactly once, after selection, with the selected weights.
        eval_timer = StepTimer(device)
        with PeakMemory(device) as mem_eval, watch.phase("eval"):
            test = data.splits["test"]
            logits, labels = predict(
                model,
                test.images,
                test.labels,
                batch_size=cell.batch_size,
                timer=eval_timer,
                features=sources["test"] if sources else None,
                **common,
            )
        test_metrics = compute_metrics(logits, labels, task)
        record.update(
            status="ok",
            metrics={
                "primary_metric": primary,
                "primary": test_metrics[primary],
                "test": test_metrics,
                "val": best_val,
                # the test split's reliability diagram (report plots; EPT's calibration theme)
                "calibration": reliability_bins(logits, labels, task),
            },
            training=training,
        )
        record["cost"] = {
            "train_step": train_timer.summary(),
            "eval_step": eval_timer.summary(),
            "memory": {**memory, "train": mem_train.result, "eval": mem_eval.result},
        }
        if cell.compile:
            # Compilation happens in the first step of each mode (grad, inference); what that
            # step took beyond a steady one is the compile time, kept out of the step figures
            # (the timers' warm-up already excludes it).
            record["cost"]["compile_s"] = (
                train_timer.first_step_excess_s() + eval_timer.first_step_excess_s()
            )
    except Diverged as exc:
        record.update(status="diverged", error=str(exc), diverged_step=exc.step)
    except torch.cuda.OutOfMemoryError as exc:
        record.update(
            status="oom", error=f"CUDA out of memory at batch size {cell.batch_size}: {exc}"
        )
    except Exception as exc:
        record.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if trial and record["status"] in ("diverged", "oom"):
        # A diverging or oversized configuration is a finished trial that scores nothing, not a
        # failure to retry; `failed` (an error of the run itself) stays failed and is retried.
        record["trial"] = trial_result(record["status"], data.card.primary_metric, None)
        record["status"] = "trial"
    return _finish(record, t0, watch)


def trial_result(outcome: str, metric: str, value: float | None) -> dict[str, Any]:
    """A trial record's `trial` entry: how it ended and its validation score (None when it has
    none: diverged, out of memory, or an undefined metric)."""
    import math

    ok = value is not None and math.isfinite(value)
    return {
        "outcome": outcome,
        "metric": metric,
        "val_primary": float(value) if ok else None,
        "higher_is_better": HIGHER_IS_BETTER.get(metric, True),
    }


def _finish(record: dict[str, Any], t0: float, watch) -> dict[str, Any]:
    """Stamp wall time, phases, environment and finish time on a record."""
    from bench.measure import environment

    record.setdefault("cost", {})
    record["cost"].update(wall_s=time.perf_counter() - t0, phases_s=dict(watch.seconds))
    record["env"] = environment()
    record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return record
