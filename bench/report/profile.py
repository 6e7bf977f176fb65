"""`bench profile` records in the report: one table per measurement setting, a row per method.

Groups are what was measured (backbone, input size, batch, device, precision); memory is also
shown relative to the first method of each group, as `bench profile` prints it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.profiling import KIND
from bench.report.conditions import CONDITION_COLUMNS, record_conditions, timed_table, timing_note
from bench.report.formats import add_optional_costs, fmt

COLUMNS = [
    "backbone", "img_size", "batch_size", "device", "precision", "compile", "method", "status",
    "cached", "trainable_pct", "train_ms", "train_img_s", "infer_img_s", "train_mb",
    "infer_mb", "compile_s", "train_gflops", "infer_gflops", "overhead_gflops", "latency_b1_ms",
    "finished_at", *CONDITION_COLUMNS,
]  # fmt: skip
GROUP = ["backbone", "img_size", "batch_size", "device", "precision", "compile"]
TIME_COLUMNS = ("train ms/step", "train img/s", "infer img/s", "compile s", "batch-1 ms")


def is_profile(record: dict[str, Any]) -> bool:
    return record.get("kind") == KIND


def profile_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The profile records as rows (COLUMNS); a failed or OOM profile keeps its row."""
    rows = []
    for r in records:
        if not is_profile(r):
            continue
        p = r.get("profile") or {}
        step, infer = p.get("step") or {}, p.get("inference") or {}
        flops = p.get("flops") or {}
        ms = step.get("step_time_median_s")
        rows.append(
            {
                "backbone": p.get("backbone"),
                "img_size": p.get("img_size"),
                "batch_size": p.get("batch_size"),
                "device": p.get("device"),
                "precision": p.get("precision"),
                "compile": bool(p.get("compile")),
                "method": p.get("method"),
                "status": r.get("status"),
                "cached": bool(p.get("preloaded_features")),
                "trainable_pct": p.get("trainable_pct"),
                "train_ms": None if ms is None else 1000 * ms,
                "train_img_s": step.get("throughput_img_s"),
                "infer_img_s": infer.get("throughput_img_s"),
                "train_mb": p.get("train_memory_mb"),
                "infer_mb": p.get("inference_memory_mb"),
                "compile_s": p.get("compile_s"),
                "train_gflops": flops.get("train_gflops"),
                "infer_gflops": flops.get("inference_gflops"),
                "overhead_gflops": flops.get("inference_overhead_gflops"),
                "latency_b1_ms": (p.get("latency_b1") or {}).get("median_ms"),
                "finished_at": r.get("finished_at"),
                **record_conditions(p.get("conditions"), r.get("env"), p.get("device")),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def profile_tables(
    frame: pd.DataFrame, *, hide_times: bool = False
) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """(title, display table, notes on its timings) per measurement group, methods in the order
    they were profiled; `hide_times`: a group whose timings are not comparable shows none
    (`bench.report.conditions.timed_table`)."""
    out = []
    for key, g in frame.sort_values("finished_at", kind="stable").groupby(GROUP, sort=False):
        backbone, img, batch, device, precision, compiled = key
        ok = g[g["status"] == "ok"]
        base = float(ok["train_mb"].iloc[0]) if len(ok) else float("nan")
        rows = []
        for r in g.itertuples():
            rows.append(
                {
                    "method": r.method + (" (cached)" if r.cached else ""),
                    "status": r.status,
                    "trainable %": fmt(r.trainable_pct, ".3g"),
                    "train ms/step": fmt(r.train_ms, ".1f"),
                    "train img/s": fmt(r.train_img_s, ".0f"),
                    "infer img/s": fmt(r.infer_img_s, ".0f"),
                    "train MB": fmt(r.train_mb, ".1f"),
                    f"vs {ok['method'].iloc[0] if len(ok) else '-'}": fmt(
                        100 * r.train_mb / base if base > 0 and pd.notna(r.train_mb) else None,
                        ".2f",
                    ),
                    "infer MB": fmt(r.infer_mb, ".1f"),
                    **({"compile s": fmt(r.compile_s, ".1f")} if compiled else {}),
                }
            )
        table = pd.DataFrame(rows)
        add_optional_costs(table, g)  # profiles from before FLOPs were counted have none
        title = f"{backbone} · {img} px · batch {batch} · {device} · {precision}"
        table, notes = timed_table(
            table, TIME_COLUMNS, g, table["method"], timing_note(g), hide=hide_times
        )
        out.append((title + (" · compiled" if compiled else ""), table, notes))
    return out


NOTE = (
    "bench profile: one synthetic batch per method, each method in a fresh process; times are "
    "medians over rounds of device-synchronised steps, warm-up excluded. train MB: memory used "
    "while training, as `bench run` measures it (on GPU the most PyTorch allocated at once; on "
    "CPU the memory held when a steady step began plus the most its tensors took at once; both "
    "beyond what was held before the model was built); vs: percent of the group's first method. (cached): trains from frozen features "
    "computed once; inference always runs the whole model. GFLOPs per image are counted, not "
    "timed (train: one step's forward and backward, from the cached features where (cached); "
    "overhead: inference after merging, where the method merges, minus the backbone's); "
    "batch-1 ms: median time of one image through the whole model."
)
