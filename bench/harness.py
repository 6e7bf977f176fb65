"""One cell, start to finish: build, freeze, adapt, count, train, select on val, test once, measure.

This is the only module that knows the order of these steps. It returns a record whatever
happens; the grid's executor decides what to do with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.artefacts import PENDING as PENDING_ARTEFACTS
from bench.artefacts import trained
from bench.backbone_config import backbone_config, weightless
from bench.backbones import BackboneSource, create_backbone
from bench.cards import DatasetCard
from bench.config import CellConfig
from bench.data import LoadedDataset
from bench.demo import DEMO_NOTICE
from bench.errors import UserError
from bench.frozen_features import (
    feature_mode,
    live_features,
    preload_features,
    uses_frozen_features,
)
from bench.measure import (
    PeakMemory,
    Phase,
    Stopwatch,
    batch1_latency,
    count_params,
    environment,
    flops_per_image,
    gpu_busy_processes,
    memory_baseline,
    param_report,
)
from bench.measure.device import empty_cache
from bench.metric_table import HIGHER_IS_BETTER
from bench.metrics import compute_metrics, reliability_bins
from bench.model_init import init_head, set_dropout
from bench.predictions import PENDING
from bench.record import Record
from bench.selection import selection_record
from bench.split_sizes import split_counts
from bench.train import Diverged, FitResult, TrainSettings, fit, image_free, predict
from bench.train_free import remember, training_free
from bench.transforms import Preprocess
from bench.tuning_select import trial_result
from methods import get_method

OnStep = Callable[[int, int, float, int], None]
OnPreload = Callable[[str, int, int], None]
OnEpoch = Callable[[dict[str, Any]], None]


def run_cell(
    cell: CellConfig,
    data: LoadedDataset,
    source: BackboneSource,
    *,
    on_step: OnStep | None = None,
    on_preload: OnPreload | None = None,
    on_epoch: OnEpoch | None = None,
) -> dict[str, Any]:
    """Run one cell and return its record: status ok, failed, oom or diverged, or `trial` for a
    search trial, which sees train and val only and is scored on val, never tested. An ok
    record also carries its test and validation predictions under bench.predictions.PENDING,
    and a final (not a trial) its trained tensors under bench.artefacts.PENDING, for
    bench.records.save_record to write beside it."""
    trial = cell.role == "trial"
    if trial:
        data = data.sealed()
    record = base_record(cell, data, source)
    device = torch.device(cell.device)
    if device.type == "cuda":
        # Another process on the GPU skews time and NVML memory: say so in the record (None:
        # NVML unavailable, so nobody checked).
        record.gpu_other_processes = gpu_busy_processes(device.index or 0)
    t0, watch, memory, energy = time.perf_counter(), Stopwatch(device), {}, {}
    predictions = kept = None
    try:
        # Memory figures count from here: the data is loaded, nothing of this cell exists yet.
        baseline = memory_baseline(device)
        seed_everything(cell.seed, device)
        with watch.phase("build"):
            model, prep = _build(cell, data, source, device, record)
        with watch.phase("count"):
            counted = model_costs(model, cell, source, data.num_classes, device)
        if cell.compile:
            compile_forward(model)  # after the count: FLOPs are counted on the eager forward
        sources = _feature_sources(model, cell, data, prep, device, watch, memory, baseline,
                                   record, on_preload)  # fmt: skip
        settings = TrainSettings.for_cell(cell, prep, multilabel=data.card.multilabel)
        # A compiled forward would recompile under the op counter: its phase peak is kept.
        train = Phase(device, baseline, step_at=None if cell.compile else 1, load=True)
        with train, watch.phase("train"):
            splits = _split(data, "train"), _split(data, "val")
            features = (sources["train"], sources["val"]) if sources else None
            if training_free(model):  # k-NN: the training split becomes its memory
                result = remember(model, *splits, settings, score=_scorer(data.card),
                                  features=features, timer=train.timer, memory=train.steps,
                                  on_epoch=on_epoch)  # fmt: skip
            else:
                result = fit(model, *splits, settings, score=_scorer(data.card),
                             timer=train.timer, memory=train.steps, on_step=on_step,
                             on_epoch=on_epoch, features=features)  # fmt: skip
        memory["train"], energy["train"] = train.memory, train.joules
        primary, best_val = data.card.primary_metric, result.history[result.best_epoch]["val"]
        if trial:
            record.status = "trial"
            record.trial = trial_result("ok", primary, best_val.get(primary))
            record.metrics = {
                "primary_metric": primary,
                "primary": None,
                "test": {},
                "val": best_val,
            }
            record.training = _training(result, cell, model, sources, primary)
            record.cost = {"train_step": train.timer.summary(), "memory": memory,
                           "conditions": train.conditions, **counted}  # fmt: skip
            return _finish(record, t0, watch)
        # The test split is read exactly once, after selection, with the selected weights.
        evaluation = Phase(device, baseline, step_at=None if cell.compile else 0)
        with evaluation, watch.phase("eval"):
            test = data.splits["test"]
            logits, labels = predict(model, test.images, test.labels, batch_size=cell.batch_size,
                                     device=device, precision=cell.precision, preprocess=prep,
                                     timer=evaluation.timer, memory=evaluation.steps,
                                     features=sources["test"] if sources else None)  # fmt: skip
        memory["eval"], energy["eval"] = evaluation.memory, evaluation.joules
        record.status = "ok"
        # saved beside the record by bench.records.save_record: the report's per-image figures
        predictions = {"test": (logits, labels), "val": (result.val_logits, result.val_labels)}
        # likewise the trainable tensors that gave these logits (fit restored the selected epoch)
        kept = trained(model, cell, source, data.num_classes)
        record.metrics = _test_metrics(logits, labels, data.card, best_val)
        record.training = _training(result, cell, model, sources, primary)
        record.cost = _cost(cell, train.timer, evaluation.timer, memory, energy)
        record.cost |= {"conditions": train.conditions, **counted}
    except Diverged as exc:
        record.status, record.error, record.diverged_step = "diverged", str(exc), exc.step
    except torch.cuda.OutOfMemoryError as exc:
        record.status = "oom"
        record.error = f"CUDA out of memory at batch size {cell.batch_size}: {exc}"
    except Exception as exc:
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
        record.traceback = traceback.format_exc()
    finally:
        empty_cache(device)
    if trial and record.status in ("diverged", "oom"):
        # A diverging or oversized configuration is a finished trial that scores nothing, not a
        # failure to retry; `failed` (an error of the run itself) stays failed and is retried.
        record.trial = trial_result(record.status, data.card.primary_metric, None)
        record.status = "trial"
    out = _finish(record, t0, watch)
    if record.status == "ok" and predictions is not None:
        out[PENDING], out[PENDING_ARTEFACTS] = predictions, kept
    return out


def _build(cell: CellConfig, data: LoadedDataset, source: BackboneSource, device, record: Record):
    """The adapted model on the device, its counts in the record, and the cell's input pipeline
    (normalisation from the backbone's pretraining, read before any wrapper hid it)."""
    model, head, backbone_params, head_params, cfg = build_model(cell, source, data.num_classes)
    record.params = param_report(backbone_params, head_params, model, head)
    if hasattr(model, "paper_trainable_pct"):
        # The method's paper states its fraction by its own formula; keep both.
        record.params["paper_trainable_pct"] = model.paper_trainable_pct(
            record.params["trainable_params"]
        )
    if hasattr(model, "describe"):
        record.method_info = model.describe()
    model.to(device)
    prep = Preprocess.for_backbone(cfg, img_size=cell.img_size, augment=cell.augment)
    record.normalization = {"mean": list(prep.mean), "std": list(prep.std)}
    record.preprocess = prep.describe()
    return model, prep


def model_costs(
    model, cell: CellConfig, source: BackboneSource, num_classes: int, device
) -> dict[str, Any]:
    """What the built model costs whatever the machine (FLOPs per image, counted) and how fast it
    answers one image here (batch-1 latency), measured before training, the frozen part still
    there and the forward not yet compiled; neither changes the model or the run's random
    numbers."""
    arch = dataclasses.replace(source, pretrained=False, weights=None, weights_sha256=None)
    # the bare backbone's shapes, for the method's overhead
    backbone = weightless(
        lambda: create_backbone(arch, num_classes=num_classes, img_size=cell.img_size)
    )
    flops = flops_per_image(model, img_size=cell.img_size, device=device,
                            precision=cell.precision, backbone=backbone,
                            merge=get_method(cell.method).merge,
                            from_features=feature_mode(model, cell)[0] == "preload")  # fmt: skip
    latency = batch1_latency(model, img_size=cell.img_size, device=device,
                             precision=cell.precision)  # fmt: skip
    return {"flops": flops, "latency_b1": latency}


def _feature_sources(model, cell, data, prep, device, watch, memory, baseline, record, on_preload):
    """A frozen-feature model's feature source per split (None for any other model); a preload
    is its own measured phase."""
    mode, entry = feature_mode(model, cell)
    if entry is not None:
        record.feature_cache = entry
    if mode == "live":
        return live_features(model, data, prep)
    if mode != "preload":
        return None
    with PeakMemory(device, baseline_mb=baseline) as mem_preload, watch.phase("preload"):
        sources, record.feature_cache = preload_features(
            model, cell, data, prep, device=device, on_preload=on_preload
        )
    memory["preload"] = mem_preload.result
    return sources


def _split(data: LoadedDataset, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return data.splits[name].images, data.splits[name].labels


def _scorer(card: DatasetCard):
    """score(logits, labels) -> (the primary metric signed so that higher is better, all)."""
    sign = 1.0 if HIGHER_IS_BETTER.get(card.primary_metric, True) else -1.0

    def score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
        metrics = compute_metrics(logits, labels, card.task)
        return sign * metrics[card.primary_metric], metrics

    return score


def _training(result: FitResult, cell: CellConfig, model, sources, primary: str) -> dict[str, Any]:
    training = {
        # What the training views really were: a head on cached features gets none.
        "augment_applied": "none"
        if image_free(model, sources["train"] if sources else None)
        else cell.augment,
        "best_epoch": result.best_epoch,  # the epoch `selection` kept, whatever its rule
        "selection": selection_record(cell.select, primary, result.history, result.best_epoch),
        "epochs": cell.epochs,
        "steps": result.steps,
        "history": result.history,
    }
    if result.skipped_steps is not None:  # fp16: steps its loss scaler skipped, its last scale
        training["grad_scaler"] = {"skipped_steps": result.skipped_steps,
                                   "loss_scale": result.loss_scale}  # fmt: skip
    return training


def _test_metrics(logits, labels, card: DatasetCard, best_val: dict) -> dict[str, Any]:
    test = compute_metrics(logits, labels, card.task)
    return {
        "primary_metric": card.primary_metric,
        "primary": test[card.primary_metric],
        "test": test,
        "val": best_val,
        # the test split's reliability diagram (report plots; EPT's calibration theme)
        "calibration": reliability_bins(logits, labels, card.task),
    }


def _cost(cell: CellConfig, train_timer, eval_timer, memory: dict, energy: dict) -> dict[str, Any]:
    train_step, eval_step = train_timer.summary(), eval_timer.summary()
    cost: dict[str, Any] = {"train_step": train_step, "eval_step": eval_step, "memory": memory}
    if energy.get("train") is not None:
        cost["energy"] = _energy(energy, train_step["images_total"], eval_step["images_total"])
    if cell.compile:
        # Compilation happens in the first step of each mode (grad, inference); what that step
        # took beyond a steady one is the compile time, kept out of the step figures (the
        # timers' warm-up already excludes it).
        cost["compile_s"] = train_timer.first_step_excess_s() + eval_timer.first_step_excess_s()
    return cost


def _energy(joules: dict[str, float | None], train_images: int, eval_images: int) -> dict:
    """Joules the GPU drew while training and testing, in all and per image processed."""

    def per(j: float | None, n: int) -> float | None:
        return j / n if j is not None and n else None

    return {
        "train_j": joules.get("train"),
        "eval_j": joules.get("eval"),
        "train_j_per_image": per(joules.get("train"), train_images),
        "eval_j_per_image": per(joules.get("eval"), eval_images),
        "source": "NVML energy counter of the whole GPU over each phase; training includes its "
        "validation passes",
    }


def base_record(cell: CellConfig, data: LoadedDataset, source: BackboneSource) -> Record:
    """What a cell's record says before it runs: the cell, its data and its weights."""
    card = data.card
    demo = card.synthetic or source.is_demo
    return Record(
        run_id=cell.run_id,
        status=None,
        error=None,
        demo=demo,
        notice=DEMO_NOTICE if demo else None,
        config=cell.to_dict(),
        dataset={
            "name": card.name,
            "task": card.task,
            "num_classes": data.num_classes,
            "classes": list(card.classes),
            "primary_metric": card.primary_metric,
            "sizes": {k: len(v) for k, v in data.splits.items()},
            "class_counts": split_counts(data),  # what a score's uncertainty depends on
            "fingerprint": data.fingerprint,
            "synthetic": card.synthetic,
            # carved val, few-shot sample (indices or file names): enough to audit and rerun
            "protocol": data.protocol,
        },
        backbone={
            "name": source.name,
            "pretrained": source.pretrained,
            "weights": str(source.weights) if source.weights else None,
            "weights_sha256": source.weights_sha256,
            "architecture": backbone_config(source.name).architecture,
        },
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device's generator: CPU, CUDA and MPS
    # Bit-reproducible on CPU; on GPU the fast non-deterministic kernels stay (speed is measured).
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)


def adapt(model, method: str, hparams: dict[str, Any]):
    """Count the frozen backbone, then apply `method`; returns (adapted model, head,
    backbone parameters without the head, head parameters). Bad values raise UserError."""
    head_params = count_params(model.get_classifier())
    backbone_params = count_params(model) - head_params
    try:
        adapted = get_method(method).build(model, **hparams)
    except (ValueError, TypeError) as exc:
        raise UserError(f"method {method!r} with {hparams}: {exc}") from exc
    if not any(p.requires_grad for p in adapted.parameters()) and not training_free(adapted):
        raise UserError(f"method {method!r} left no parameter trainable")
    # A method may replace the head (an MLP head) or wrap the model; wrappers expose
    # get_classifier() so "trainable without the head" stays meaningful.
    head = (
        adapted.get_classifier() if hasattr(adapted, "get_classifier") else model.get_classifier()
    )
    return adapted, head, backbone_params, head_params


def build_model(cell: CellConfig, source: BackboneSource, num_classes: int):
    """The frozen backbone, adapted by the cell's method; also returns the pre-method counts
    and the backbone's pretrained config (read before any wrapper hides it). The head and the
    dropout are set before the method adapts the model, so a method's copy of the head (peft's
    modules_to_save) starts from the same tensor."""
    model = create_backbone(source, num_classes=num_classes, img_size=cell.img_size)
    init_head(model, cell.head_init)
    set_dropout(model, cell.backbone_dropout)
    return (*adapt(model, cell.method, cell.hparams), dict(model.pretrained_cfg))


def compile_forward(model) -> None:
    """`torch.compile` the forward the harness calls (`forward_with` for a frozen-feature model),
    on the instance, so parameter names, state dicts and train/eval switching are untouched."""
    name = "forward_with" if uses_frozen_features(model) else "forward"
    setattr(model, name, torch.compile(getattr(model, name)))


def _finish(record: Record, t0: float, watch) -> dict[str, Any]:
    """Stamp wall time, phases, environment and finish time on a record; its JSON form."""
    if not isinstance(record.cost, dict):
        record.cost = {}
    record.cost.update(wall_s=time.perf_counter() - t0, phases_s=dict(watch.seconds))
    record.env = environment()
    record.finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return record.to_json()
