"""The counted and device costs in the report (FLOPs, batch-1 latency, energy): frame columns, the
efficiency and profile tables, the score-vs-training-compute figure, and records from before them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench.record_types import wrong_types
from bench.report import profile_frame, profile_tables, records_frame
from bench.report.efficiency import efficiency_display, efficiency_table
from bench.report.plots import write_plots

COSTS = ("train GFLOPs", "infer GFLOPs", "overhead GFLOPs", "batch-1 ms", "train J/img",
         "eval J/img")  # fmt: skip
FLOPS = {  # ViT-S/16 at 224, as bench.measure.flops_per_image counts them
    "full": (27.83, 9.20, 0.0),
    "lora": (19.35, 9.26, 0.0),
    "vpt": (20.46, 9.70, 0.50),
}


def flops(method: str) -> dict[str, Any]:
    train, infer, overhead = FLOPS[method]
    return {
        "img_size": 224,
        "inference_gflops": infer,
        "inference_fixed_gflops": 0.0,
        "train_gflops": train,
        "train_fixed_gflops": 0.0,
        "train_counts": "forward and backward of the whole model",
        "feature_gflops": None,
        "merged_inference_gflops": 9.20 if method == "lora" else None,
        "backbone_gflops": 9.20,
        "inference_overhead_gflops": overhead,
    }


def record(method: str, seed: int, score: float, *, new: bool = True) -> dict[str, Any]:
    cost: dict[str, Any] = {"wall_s": 10.0}
    if new:
        cost |= {
            "flops": flops(method),
            "latency_b1": {"median_ms": 5.0 + seed, "p90_ms": 7.0, "repeats": 20, "warmup": 3},
            "energy": {"train_j_per_image": 2.0, "eval_j_per_image": 0.5},
        }
    return {
        "schema": 1,
        "run_id": f"{method}-{seed}-{new}",
        "status": "ok",
        "config": {"dataset": "derma", "method": method, "backbone": "vit_s", "seed": seed},
        "metrics": {"primary_metric": "accuracy", "primary": score, "test": {"accuracy": score}},
        "params": {"trainable_params": 1000, "trainable_pct": 1.0},
        "cost": cost,
    }


def records(new: bool = True) -> list[dict[str, Any]]:
    scores = {"full": 0.70, "lora": 0.72, "vpt": 0.65}
    return [record(m, s, v + 0.01 * s, new=new) for m, v in scores.items() for s in (0, 1)]


def test_frame_reads_the_new_costs_and_leaves_old_records_nan() -> None:
    df = records_frame([*records(), record("lora", 2, 0.7, new=False)])
    lora = df[df["method"] == "lora"]
    assert lora["train_gflops"].iloc[0] == pytest.approx(19.35)
    assert lora["infer_gflops"].iloc[0] == pytest.approx(9.26)
    assert lora["overhead_gflops"].iloc[0] == 0.0
    assert lora["latency_b1_ms"].tolist()[:2] == [5.0, 6.0]
    assert lora["train_j_img"].iloc[0] == 2.0 and lora["eval_j_img"].iloc[0] == 0.5
    old = lora.iloc[-1]
    assert all(math.isnan(old[c]) for c in ("train_gflops", "latency_b1_ms", "eval_j_img"))


def test_efficiency_table_shows_the_costs_only_when_recorded() -> None:
    eff = efficiency_table(records_frame(records())).set_index("method")
    assert eff.loc["vpt", "overhead_gflops"] == pytest.approx(0.50)
    assert eff.loc["lora", "latency_b1_ms"] == pytest.approx(5.5)  # mean over the two seeds
    shown = efficiency_display(efficiency_table(records_frame(records())))
    assert all(c in shown.frame.columns for c in COSTS)
    row = shown.frame.set_index("method").loc["vpt"]
    assert (row["train GFLOPs"], row["overhead GFLOPs"], row["batch-1 ms"]) == (
        "20.5",
        "0.5",
        "5.5",
    )
    assert any("GFLOPs per image, counted" in n for n in shown.footnotes)

    old = efficiency_display(efficiency_table(records_frame(records(new=False))))
    assert not any(c in old.frame.columns for c in COSTS)
    assert not any("GFLOPs" in n for n in old.footnotes)


def profile_record(method: str, *, new: bool) -> dict[str, Any]:
    profile = {"method": method, "backbone": "vit_s", "img_size": 224, "batch_size": 8,
               "device": "cuda:0", "precision": "bf16", "compile": False,
               "train_memory_mb": 100.0, "step": {"step_time_median_s": 0.1}}  # fmt: skip
    if new:
        profile |= {"flops": flops(method), "latency_b1": {"median_ms": 4.0, "p90_ms": 5.0}}
    return {"schema": 1, "kind": "profile", "run_id": f"p-{method}-{new}", "status": "ok",
            "profile": profile, "finished_at": f"2025-01-0{1 + new}"}  # fmt: skip


def test_profile_table_shows_flops_and_latency_when_recorded() -> None:
    for r in (profile_record("lora", new=True), profile_record("lora", new=False)):
        assert wrong_types(r) is None
    ((_, table, _),) = profile_tables(profile_frame([profile_record("lora", new=True)]))
    assert table[["train GFLOPs", "infer GFLOPs", "batch-1 ms"]].iloc[0].tolist() == [
        "19.4",
        "9.26",
        "4.0",
    ]
    assert "train J/img" not in table.columns  # a profile measures no energy
    ((_, table, _),) = profile_tables(profile_frame([profile_record("lora", new=False)]))
    assert not any(c in table.columns for c in COSTS)


def test_records_with_costs_of_the_wrong_type_are_refused() -> None:
    good = record("lora", 0, 0.7)
    assert wrong_types(good) is None
    good["cost"]["flops"]["train_gflops"] = "19"
    assert wrong_types(good) == "cost.flops.train_gflops is str, expected number"
    bad = profile_record("lora", new=True)
    bad["profile"]["latency_b1"] = [4.0]
    assert wrong_types(bad) == "profile.latency_b1 is list, expected dict"


def test_score_vs_training_compute_figure(tmp_path: Path) -> None:
    written = write_plots(records_frame(records()), tmp_path)
    assert tmp_path / "score_vs_train_flops-derma-vit-s.png" in written
    assert tmp_path / "score_vs_train_flops-derma-vit-s.pdf" in written
    older = write_plots(records_frame(records(new=False)), tmp_path / "old")
    assert not any(p.name.startswith("score_vs_train_flops") for p in older)
