"""Timings under different conditions in the report: contended rows marked †, a warning under
every table whose timings are not comparable, `--hide-incomparable-times`; on records by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from bench.cli import app
from bench.report import profile_frame, profile_tables, records_frame
from bench.report.conditions import MARK, timing_note
from bench.report.efficiency import efficiency_display, efficiency_table
from bench.report.formats import to_latex
from bench.report.summary import render_markdown

BUSY = "other processes used 63 % of the CPUs"


def conditions(*, busy: bool = False, threads: int = 2) -> dict[str, Any]:
    return {"contended": busy, "contention_reason": BUSY if busy else None,
            "others_cpu_share": 0.63 if busy else 0.01, "torch_threads": threads,
            "cpu_count": 2}  # fmt: skip


def env(host: str = "box", threads: int = 2) -> dict[str, Any]:
    return {"hostname": host, "cpu_model": "Test CPU", "device_names": ["Test CPU"],
            "torch_num_threads": threads, "cpu_count": 2}  # fmt: skip


def record(
    method: str, seed: int, *, cond: dict | None = None, host: str = "box", threads: int = 2
) -> dict[str, Any]:
    cost: dict[str, Any] = {"phases_s": {"train": 2.0}, "train_step": {"throughput_img_s": 161.0}}
    if cond is not None:
        cost["conditions"] = cond
    return {
        "schema": 1,
        "run_id": f"derm-{method}-{seed}",
        "status": "ok",
        "config": {
            "dataset": "derm",
            "method": method,
            "seed": seed,
            "backbone": "vit_t",
            "pretrained": True,
            "device": "cpu",
            "shots": None,
        },
        "metrics": {"primary_metric": "accuracy", "primary": 0.8, "test": {"accuracy": 0.8}},
        "params": {"trainable_params": 1000, "trainable_pct": 1.5},
        "cost": cost,
        "env": env(host, threads),
    }


CLEAN = [record(m, s, cond=conditions()) for m in ("full", "lora") for s in (0, 1)]
BUSY_LORA = [*CLEAN[:3], record("lora", 1, cond=conditions(busy=True))]


def test_the_frame_carries_each_records_conditions() -> None:
    old = {**record("full", 2), "env": {}}
    df = records_frame([*BUSY_LORA, old]).set_index("run_id")
    assert df.loc["derm-lora-1", "contended"] is True
    assert df.loc["derm-lora-0", "contended"] is False
    assert df.loc["derm-lora-1", "others_cpu_share"] == 0.63
    assert df.loc["derm-full-0", "machine"] == "box · Test CPU"
    assert df.loc["derm-full-0", ["torch_threads", "cpu_count"]].tolist() == [2, 2]
    assert df.loc["derm-full-2", "contended"] is None  # unknown, never contended
    assert pd.isna(df.loc["derm-full-2", "machine"])


def test_timing_note_names_what_differs() -> None:
    assert timing_note(records_frame(CLEAN)) is None
    # records from before conditions were measured: unknown, not a warning
    assert timing_note(records_frame([record("full", s) for s in (0, 1)])) is None
    note = timing_note(records_frame(BUSY_LORA))
    assert note == "Timings not comparable: 1 of 4 runs timed while other processes were busy."
    mixed = [*CLEAN[:2], record("lora", 0, cond=conditions(threads=8), host="other", threads=8)]
    assert timing_note(records_frame(mixed)) == (
        "Timings not comparable: run on 2 machines (box · Test CPU; other · Test CPU), with 2 "
        "and 8 torch threads."
    )


def block_table(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_summary_marks_the_contended_row_and_warns() -> None:
    text = render_markdown(records_frame(BUSY_LORA))
    lora = next(line for line in block_table(text) if line.startswith("| lora"))
    full = next(line for line in block_table(text) if line.startswith("| full"))
    assert f"2.0{MARK}" in lora and f"161{MARK}" in lora and MARK not in full
    assert f"{MARK} timed while {BUSY} in 1 of 2 runs: lora." in text
    assert "Timings not comparable: 1 of 4 runs timed while other processes were busy." in text


def test_summary_of_runs_timed_alike_has_no_mark_and_no_warning() -> None:
    for text in (render_markdown(records_frame(CLEAN)),
                 render_markdown(records_frame(CLEAN), hide_times=True)):  # fmt: skip
        assert MARK not in text and "not comparable" not in text
        assert "img/s" in block_table(text)[0]  # nothing to hide


def test_hiding_drops_the_time_columns_and_says_so() -> None:
    text = render_markdown(records_frame(BUSY_LORA), hide_times=True)
    header = block_table(text)[0]
    assert "img/s" not in header and "train s" not in header and "score" not in header
    assert "accuracy" in header  # the scores stay
    assert MARK not in "\n".join(block_table(text))
    assert "Time columns left out (train s, img/s; --hide-incomparable-times)." in text


def test_efficiency_table_marks_warns_and_hides() -> None:
    df = records_frame(BUSY_LORA)
    eff = efficiency_table(df)
    assert eff["contended"].tolist() == [False, True]
    shown = efficiency_display(eff, timing=timing_note(df))
    lora = shown.frame.set_index("method").loc["lora"]
    assert (lora["train s"], lora["img/s"]) == (f"2.0{MARK}", f"161{MARK}")
    assert any(n.startswith(f"{MARK} timed while {BUSY}") and "/ lora" in n
               for n in shown.footnotes)  # fmt: skip
    assert any(n.startswith("Timings not comparable") for n in shown.footnotes)
    assert r"\textdagger{}" in to_latex(shown.frame, caption="c", label="t")
    hidden = efficiency_display(eff, timing=timing_note(df), hide_times=True)
    assert "img/s" not in hidden.frame and "train s" not in hidden.frame
    assert list(hidden.ranks.columns) == list(hidden.frame.columns)


def profile(method: str, *, cond: dict | None, finished: str) -> dict[str, Any]:
    p = {"method": method, "backbone": "vit_t", "img_size": 32, "batch_size": 8, "device": "cpu",
         "precision": "fp32", "compile": False, "trainable_pct": 1.0,
         "step": {"step_time_median_s": 0.1, "throughput_img_s": 80.0},
         "inference": {"throughput_img_s": 200.0}, "train_memory_mb": 10.0,
         "inference_memory_mb": 5.0}  # fmt: skip
    if cond is not None:
        p["conditions"] = cond
    return {"schema": 1, "kind": "profile", "run_id": f"profile-{method}", "status": "ok",
            "profile": p, "env": env(), "finished_at": finished}  # fmt: skip


def test_profile_tables_mark_warn_and_hide() -> None:
    frame = profile_frame([profile("full", cond=conditions(), finished="1"),
                           profile("lora", cond=conditions(busy=True), finished="2")])  # fmt: skip
    [(_, table, notes)] = profile_tables(frame)
    lora = table.set_index("method").loc["lora"]
    assert lora["train ms/step"] == f"100.0{MARK}" and lora["infer img/s"] == f"200{MARK}"
    assert notes[0] == f"{MARK} timed while {BUSY}: lora."
    assert notes[1].startswith("Timings not comparable: 1 of 2 runs")
    [(_, hidden, notes)] = profile_tables(frame, hide_times=True)
    assert "train img/s" not in hidden and "train MB" in hidden
    assert len(notes) == 1 and "left out" in notes[0]
    [(_, _, none)] = profile_tables(profile_frame([profile("full", cond=None, finished="1")]))
    assert none == []


def test_report_command_hides_incomparable_times(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for r in BUSY_LORA:
        (results / f"{r['run_id']}.json").write_text(json.dumps(r))
    runner = CliRunner()
    for hide, out in ((False, tmp_path / "shown"), (True, tmp_path / "hidden")):
        args = ["report", "--results", str(results), "--out", str(out), "--no-plots"]
        res = runner.invoke(app, args + ["--hide-incomparable-times"] * hide,
                            env={"COLUMNS": "200"})  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "Timings not comparable" in res.output
        efficiency = (out / "efficiency.md").read_text()
        headers = [line for line in efficiency.splitlines() if line.startswith("| block")]
        assert len(headers) == 2  # costs, then score and composites
        assert any("img/s" in h for h in headers) is not hide
        assert (MARK in (out / "summary.md").read_text()) is not hide
        assert "Timings not comparable" in (out / "index.html").read_text()
