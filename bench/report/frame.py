"""Records to the long pandas frame every table and figure of the report reads."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from bench.config import LATE_DEFAULTS, identity_fields
from bench.metric_table import TEST_METRICS
from bench.option_values import LOOP_KEYS
from bench.predictions import predictions_file
from bench.report.conditions import record_conditions
from bench.report.formats import OPTIONAL_COSTS
from bench.report.profile import is_profile
from bench.report.tuning import is_trial, role, row_name

# Costs newer records carry (FLOPs and latency from bench.measure; energy on a GPU): NaN in older
# ones, and a table leaves out a column no record fills.
COST_COLUMNS = tuple(col for col, _, _ in OPTIONAL_COSTS)
# A cell's training settings beside its lr and weight decay (what a paper protocol pins).
RECIPE_KEYS = ("optimizer", *LOOP_KEYS)


def _setting(cfg: dict[str, Any]) -> str:
    """Hash of everything but the seeds: records are only ever averaged within one setting. A
    few-shot setting pools its split seeds with its training seeds, as the papers average over
    samplings and runs. Fields added later count only away from their old-behaviour value, so a
    record from before them pools with a new one of the same setting."""
    rest = {k: v for k, v in identity_fields(cfg).items() if k not in ("seed", "split_seed")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _memory_mb(mem: dict[str, Any] | None) -> float | None:
    """A phase's memory as bench.measure.memory defines it (`own_mb`). Older records lack it:
    their GPU allocator peak still means the same, but their host figure was the process's
    lifetime peak, which earlier cells set, so it is left out rather than compared."""
    if not mem:
        return None
    value = mem.get("own_mb", mem.get("peak_allocated_mb"))
    return float(value) if value is not None else None


def memory_words(df: pd.DataFrame) -> str:
    """What the memory figures in `df` mean, in the words their records carry (GPU and host
    runs define theirs differently); older records carry none."""
    words = sorted(set(df["memory_source"].dropna())) if "memory_source" in df.columns else []
    return "; ".join(words) if words else "not recorded in a comparable way by these runs"


def numeric(df: pd.DataFrame, name: str) -> pd.Series:
    """A column as floats, NaN where it is absent or not a number (records carry None)."""
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=df.index, dtype=float)


def _class_names(classes: Any) -> list[str] | None:
    """A record's class names, or None where it has no list of names."""
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record (the long frame every table and plot reads); test metrics are
    fractions, NaN where a record has none. `predictions_file`: the absolute path of the cell's
    predictions (bench.predictions.load_predictions with `predictions_sha256`) when a record
    read by bench.records.load_records names one that is there, else None."""
    rows = []
    for r in records:
        if is_profile(r):  # `bench profile` records: bench.report.profile
            continue
        if is_trial(r):  # search trials have no test score: bench.report.tuning shows them
            continue
        cfg = r.get("config", {})
        tuned = role(cfg) == "final"
        metrics = r.get("metrics") or {}
        test = metrics.get("test", {})
        cost = r.get("cost") or {}
        params = r.get("params") or {}
        memory = cost.get("memory") or {}
        flops = cost.get("flops") or {}
        energy = cost.get("energy") or {}
        dataset = r.get("dataset") or {}
        training = r.get("training") or {}
        primary = metrics.get("primary_metric") or dataset.get("primary_metric")
        predictions = predictions_file(r)
        rows.append(
            {
                "run_id": r["run_id"],
                "status": r.get("status"),
                "error": r.get("error"),
                "dataset": cfg.get("dataset"),
                # A tuned method is another row than its fixed-hyperparameter runs everywhere.
                "method": row_name(cfg) if tuned else cfg.get("method"),
                "method_name": cfg.get("method"),
                "regime": "tuned" if tuned else "fixed",
                "budget": cfg["tuning"].get("budget") if tuned else None,
                "seed": cfg.get("seed"),
                "shots": cfg.get("shots"),
                "split_seed": cfg.get("split_seed", 0),
                # A randomly initialised backbone is another model: its own block everywhere.
                "backbone": (cfg.get("backbone") or "")
                + (" (random init)" if cfg.get("pretrained") is False else ""),
                "pretrained": cfg.get("pretrained"),
                "img_size": cfg.get("img_size"),
                "epochs": cfg.get("epochs"),
                "batch_size": cfg.get("batch_size"),
                # --oom-retry may have trained the cell at a smaller batch than its config asks
                "batch_size_used": (r.get("training") or {}).get("batch_size_used")
                or cfg.get("batch_size"),
                "augment": cfg.get("augment"),
                "precision": cfg.get("precision"),
                # the training recipe a paper protocol fixes (older records: the defaults)
                "recipe": {k: cfg.get(k, LATE_DEFAULTS.get(k)) for k in RECIPE_KEYS},
                "hparams": cfg.get("hparams") or {},
                "device": cfg.get("device"),
                "setting": _setting(cfg),
                "demo": bool(r.get("demo")),
                "primary_metric": primary,
                "primary": metrics.get("primary"),
                # the validation score at the epoch the cell's rule selected, and that epoch
                "val_primary": (metrics.get("val") or {}).get(primary),
                "selected_epoch": training.get("best_epoch"),
                "epochs_run": len(training["history"]) if training.get("history") else None,
                "select": cfg.get("select", "best"),
                # the test split behind the score (class counts: records since they were kept)
                "n_test": (dataset.get("sizes") or {}).get("test"),
                "n_val": (dataset.get("sizes") or {}).get("val"),
                "test_counts": (dataset.get("class_counts") or {}).get("test"),
                **{k: test.get(k) for k in TEST_METRICS},
                "trainable_params": params.get("trainable_params"),
                "trainable_pct": params.get("trainable_pct"),
                "trainable_pct_no_head": params.get("trainable_pct_no_head"),
                "peak_train_mem_mb": _memory_mb(memory.get("train")),
                "peak_preload_mem_mb": _memory_mb(memory.get("preload")),
                "peak_eval_mem_mb": _memory_mb(memory.get("eval")),
                # what the memory figure means (GPU or host), said under tables and on axes
                "memory_source": (memory.get("train") or {}).get("own_definition"),
                "train_s": (cost.get("phases_s") or {}).get("train"),
                "wall_s": cost.get("wall_s"),
                "train_img_s": (cost.get("train_step") or {}).get("throughput_img_s"),
                # what else the machine did meanwhile: bench.report.conditions
                **record_conditions(cost.get("conditions"), r.get("env"), cfg.get("device")),
                # counted per image (bench.measure.flops_per_image); absent from older records
                "train_gflops": flops.get("train_gflops"),
                "infer_gflops": flops.get("inference_gflops"),
                "overhead_gflops": flops.get("inference_overhead_gflops"),
                "latency_b1_ms": (cost.get("latency_b1") or {}).get("median_ms"),
                "train_j_img": energy.get("train_j_per_image"),
                "eval_j_img": energy.get("eval_j_per_image"),
                "calibration": metrics.get("calibration"),
                # per-image results (bench.predictions), for figures computed from predictions
                "predictions_file": str(predictions) if predictions else None,
                "predictions_sha256": (r.get("predictions") or {}).get("sha256"),
                "task": dataset.get("task"),
                "classes": _class_names(dataset.get("classes")),
                "started_at": r.get("started_at"),
            }
        )
    frame = pd.DataFrame(rows)
    if "started_at" in frame:
        # Rows in the order the cells ran, so tables list methods as the user's --methods did
        # (file names would sort them alphabetically); records without a time keep their place.
        frame = frame.sort_values("started_at", kind="stable", na_position="last")
        frame = frame.reset_index(drop=True)
    numbers = ["primary", "val_primary", "selected_epoch", "epochs_run", "n_test", "n_val", *TEST_METRICS, "trainable_pct", "trainable_pct_no_head",
               "peak_train_mem_mb", "peak_preload_mem_mb", "peak_eval_mem_mb", "train_s",
               "wall_s", "train_img_s", "others_cpu_share", "torch_threads", "cpu_count",
               *COST_COLUMNS]  # fmt: skip
    for col in numbers:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
