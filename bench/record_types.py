"""What `bench report` needs of a record's types: `wrong_types` names the first field a reader
could not use (a string where a number belongs), so a damaged record is skipped with a reason
instead of breaking the report."""

from __future__ import annotations

from typing import Any

from bench.metric_table import TEST_METRICS

# What the report reads of a record's `Conditions`, under cost.conditions or profile.conditions.
_CONDITION_TYPES = {"contended": "bool?", "contention_reason": "str?",
                    "others_cpu_share": "number?", "torch_threads": "int?",
                    "cpu_count": "int?"}  # fmt: skip


def _conditions_types(parent: str) -> dict[str, str]:
    return {parent: "dict?"} | {f"{parent}.{k}": v for k, v in _CONDITION_TYPES.items()}


def _figure_types(parent: str) -> dict[str, str]:
    """The FLOPs and batch-1 latency under `parent` (a record's cost, a profile's figures)."""
    types = {f"{parent}.flops": "dict?", f"{parent}.latency_b1": "dict?"}
    for key in ("inference_gflops", "inference_fixed_gflops", "train_gflops",
                "train_fixed_gflops", "feature_gflops", "merged_inference_gflops",
                "backbone_gflops", "inference_overhead_gflops"):  # fmt: skip
        types[f"{parent}.flops.{key}"] = "number?"
    types[f"{parent}.flops.train_counts"] = "str?"
    for key in ("median_ms", "p90_ms"):
        types[f"{parent}.latency_b1.{key}"] = "number?"
    return types


def _record_types() -> dict[str, str]:
    """Dotted key -> the type `bench report` needs there ("number": int or float, not bool; a
    trailing "?" also allows null). Parents come before their children."""
    types = {"run_id": "str", "status": "str", "error": "str?", "kind": "str?", "config": "dict"}
    types |= dict.fromkeys(("metrics", "params", "cost", "dataset"), "dict?")
    for key in ("dataset", "method", "backbone", "augment", "device", "precision"):
        types[f"config.{key}"] = "str"
    for key in ("seed", "split_seed", "epochs", "batch_size", "img_size"):
        types[f"config.{key}"] = "int"
    for key in ("lr", "weight_decay", "warmup_epochs", "grad_clip"):
        types[f"config.{key}"] = "number"
    for key in ("optimizer", "head_init", "lr_step", "decay"):  # the recipe a protocol checks
        types[f"config.{key}"] = "str"
    types["config.backbone_dropout"] = "number?"
    types |= {"config.shots": "int?", "config.pretrained": "bool", "config.hparams": "dict"}
    types |= {"config.tuning": "dict?", "trial": "dict?", "tuning": "dict?"}
    types |= {"precision_requested": "str?", "precision_reason": "str?"}
    types |= {"trial.outcome": "str", "trial.val_primary": "number?"}
    types |= {"metrics.primary": "number?", "metrics.primary_metric": "str?"}
    types |= {"metrics.test": "dict", "metrics.calibration": "dict?"}
    for key in TEST_METRICS:
        types[f"metrics.test.{key}"] = "number?"
    for key in ("count", "confidence", "accuracy"):
        types[f"metrics.calibration.{key}"] = "list"
    for key in ("trainable_params", "trainable_pct", "trainable_pct_no_head"):
        types[f"params.{key}"] = "number?"
    types |= {"cost.wall_s": "number?", "cost.memory": "dict?", "cost.phases_s": "dict?"}
    types |= {"cost.phases_s.train": "number?", "cost.train_step": "dict?"}
    types |= {"cost.train_step.throughput_img_s": "number?"}
    for phase in ("train", "preload", "eval"):
        types[f"cost.memory.{phase}"] = "dict?"
        types[f"cost.memory.{phase}.peak_allocated_mb"] = "number?"
        types[f"cost.memory.{phase}.peak_rss_mb"] = "number?"
        types[f"cost.memory.{phase}.memory_source"] = "str?"
        types[f"cost.memory.{phase}.own_mb"] = "number?"
    types["cost.energy"] = "dict?"
    for key in ("train_j", "eval_j", "train_j_per_image", "eval_j_per_image"):
        types[f"cost.energy.{key}"] = "number?"
    types["dataset.task"] = "str?"
    types |= {"predictions": "dict?", "predictions.file": "str?", "predictions.sha256": "str?"}
    types |= {"artefacts": "dict?", "artefacts.trainable": "dict?", "artefacts.frozen": "str?"}
    types |= {"artefacts.trainable.file": "str?", "artefacts.trainable.sha256": "str?"}
    return types | _conditions_types("cost.conditions") | _figure_types("cost")


_RECORD_TYPES = _record_types()
# Below the top level, what a record cannot do without: a cell's identity, a trial's outcome.
_REQUIRED = {"config.dataset", "config.method", "config.backbone", "config.seed", "trial.outcome"}
# `bench profile` records, as bench.report.profile reads them.
_PROFILE_TYPES = {
    "run_id": "str", "status": "str", "error": "str?", "finished_at": "str?", "profile": "dict",
    "profile.method": "str", "profile.backbone": "str?", "profile.device": "str?",
    "profile.precision": "str?", "profile.img_size": "int?", "profile.batch_size": "int?",
    "profile.compile": "bool?", "profile.trainable_pct": "number?",
    "profile.train_memory_mb": "number?", "profile.inference_memory_mb": "number?",
    "profile.compile_s": "number?", "profile.step": "dict?", "profile.inference": "dict?",
    "profile.step.step_time_median_s": "number?", "profile.step.throughput_img_s": "number?",
    "profile.inference.throughput_img_s": "number?", **_conditions_types("profile.conditions"),
} | _figure_types("profile")  # fmt: skip


def _has_type(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if kind in ("int", "number") and isinstance(value, bool):
        return False
    return isinstance(value, {"str": str, "int": int, "number": (int, float), "bool": bool,
                              "dict": dict, "list": list}[kind])  # fmt: skip


def wrong_types(data: dict[str, Any]) -> str | None:
    """What in a record has a type `bench report` cannot read, or None when nothing does."""
    types = _PROFILE_TYPES if data.get("kind") == "profile" else _RECORD_TYPES
    for dotted, kind in types.items():
        *parents, key = dotted.split(".")
        table: Any = data
        for name in parents:  # checked before (parents come first): a dict, None or absent
            table = table.get(name) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        if key not in table:
            if (table is data or dotted in _REQUIRED) and not kind.endswith("?"):
                return f"{dotted} is missing"
            continue
        if not _has_type(table[key], kind):
            return f"{dotted} is {type(table[key]).__name__}, expected {kind.rstrip('?')}"
    bins = (data.get("metrics") or {}).get("calibration") or {}
    lengths = {len(v) for k, v in bins.items() if k in ("count", "confidence", "accuracy")}
    values = [v for k in ("count", "confidence", "accuracy") for v in bins.get(k, [])]
    if len(lengths) > 1 or not all(_has_type(v, "number?") for v in values):
        return "metrics.calibration: bins of different lengths, or not numbers"
    return None
