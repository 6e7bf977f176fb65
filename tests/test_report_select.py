"""`bench report` filters (--datasets/--methods/--backbone/--where), the missing-cells list, the
--baseline of the paired tests, and the terminal summary agreeing with the score table; on
records written by hand into a results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.report import parse_where, records_frame, select_records, summarize
from bench.report.missing import lines, missing_in_grid
from bench.report.summary import render_markdown
from bench.report.tables import score_table

runner = CliRunner()


def record(
    method: str,
    seed: int,
    value: float,
    *,
    dataset: str = "derm",
    backbone: str = "vit_t",
    status: str = "ok",
    shots: int | None = None,
    split_seed: int = 0,
    **hparams: Any,
) -> dict[str, Any]:
    cfg = {"dataset": dataset, "method": method, "seed": seed, "backbone": backbone,
           "pretrained": True, "epochs": 3, "lr": 1e-3, "shots": shots, "split_seed": split_seed,
           "img_size": 32, "hparams": hparams}  # fmt: skip
    run_id = f"{dataset}-{backbone}-{method}-{shots}-{split_seed}-{seed}-{status}-{sorted(hparams.items())}"
    return {
        "schema": 1,
        "run_id": run_id,
        "status": status,
        "error": None if status == "ok" else "CUDA out of memory at batch 32",
        "config": cfg,
        "metrics": {
            "primary_metric": "accuracy",
            "primary": value if status == "ok" else None,
            "test": {"accuracy": value, "ece": 0.05},
        },
        "params": {"trainable_params": 1000, "trainable_pct": 1.5},
        "cost": {"phases_s": {"train": 2.0}},
    }


def write(results: Path, records: list[dict]) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    for r in records:
        (results / f"{r['run_id']}.json").write_text(json.dumps(r))
    return results


def bench(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


# --------------------------------------------------------------------------- filters


GRID = [
    record("full", 0, 0.80),
    record("full", 1, 0.82),
    record("lora", 0, 0.78, rank=8),
    record("lora", 0, 0.74, rank=4),
    record("lora", 1, 0.79, rank=8),
    record("linear", 0, 0.70, backbone="vit_s"),
    record("full", 0, 0.60, dataset="chest", shots=5, split_seed=1),
    record("full", 1, 0.0, status="oom"),
]


def ids(records: list[dict]) -> set[tuple]:
    return {(r["config"]["method"], r["config"]["seed"], r["config"]["backbone"]) for r in records}


def test_where_reaches_hyperparameters_numbers_none_and_status() -> None:
    assert len(select_records(GRID, where=parse_where(["hparams.rank=8"]))) == 2
    assert len(select_records(GRID, where=parse_where(["hparams.rank=4,8"]))) == 3
    # numbers compare as numbers: 0.001 is the lr written 1e-3
    assert len(select_records(GRID, where=parse_where(["lr=0.001"]))) == len(GRID)
    assert len(select_records(GRID, where=parse_where(["shots=full"]))) == len(GRID) - 1
    assert len(select_records(GRID, where=parse_where(["shots=5", "split_seed=1"]))) == 1
    assert len(select_records(GRID, where=parse_where(["status!=oom"]))) == len(GRID) - 1
    assert len(select_records(GRID, where=parse_where(["pretrained=true"]))) == len(GRID)
    assert select_records(GRID, where=parse_where(["pretrained=false"])) == []


def test_named_filters_combine() -> None:
    got = select_records(GRID, methods=["full", "linear"], backbones=["vit_t"], datasets=["derm"])
    assert ids(got) == {("full", 0, "vit_t"), ("full", 1, "vit_t")}
    assert len(got) == 3  # full seed 1 ok and oom: both are records of the cell


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("rank", "expected KEY=VALUE"),
        ("=5", "expected KEY=VALUE"),
        ("shots=", "expected KEY=VALUE"),
        ("shots!=", "expected KEY=VALUE"),
    ],
)
def test_malformed_where_says_the_form(item: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_where([item])


def test_unknown_where_key_names_the_keys_there_are() -> None:
    with pytest.raises(UserError, match=r"no record has the key 'hparam.rank'.*hparams\.rank"):
        select_records(GRID, where=parse_where(["hparam.rank=8"]))


def test_cli_filters_reach_every_output(tmp_path) -> None:
    results = write(tmp_path / "results", GRID)
    out = tmp_path / "out"
    res = bench("report", "--results", str(results), "--out", str(out), "--no-plots",
                "--backbone", "vit_t", "--where", "hparams.rank!=4", "--datasets", "derm")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(5 record(s))" in res.output
    csv = (out / "scores.csv").read_text()
    assert "vit_s" not in csv and "chest" not in csv
    assert "74.00" not in (out / "scores.md").read_text()  # the rank-4 run is filtered out
    assert "78.50 ± 0.71" in (out / "scores.md").read_text()  # lora rank 8: 78, 79


def test_cli_bad_filter_fails_before_writing(tmp_path) -> None:
    results = write(tmp_path / "results", GRID)
    out = tmp_path / "out"
    res = bench("report", "--results", str(results), "--out", str(out), "--where", "nope=1")
    assert res.exit_code == 2 and "no record has the key 'nope'" in res.output
    assert not out.exists()
    res = bench("report", "--results", str(results), "--out", str(out), "--where", "rank")
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = bench("report", "--results", str(results), "--out", str(out), "--paper", "nope")
    assert res.exit_code == 2 and "unknown protocol 'nope'" in res.output
    # a misspelt regime is refused even without --paper, where it would do nothing
    res = bench("report", "--results", str(results), "--out", str(out), "--paper-regime", "tune")
    assert res.exit_code == 2 and "--paper-regime must be one of fixed, tuned" in res.output
    assert not out.exists()


def test_cli_filter_matching_nothing_says_so(tmp_path) -> None:
    results = write(tmp_path / "results", GRID)
    res = bench("report", "--results", str(results), "--out", str(tmp_path / "out"),
                "--methods", "vpt")  # fmt: skip
    assert res.exit_code == 0 and "no record matches the filters" in res.output


# --------------------------------------------------------------------------- missing cells


def test_missing_cells_against_the_implied_grid() -> None:
    recs = [
        record("full", 0, 0.8), record("full", 1, 0.8), record("full", 2, 0.8),
        record("lora", 0, 0.7), record("lora", 2, 0.0, status="oom"),  # seed 1 missing
        # vpt never ran on derm but did on chest with the same backbone; every vit_t method is
        # expected in every vit_t block
        record("vpt", 0, 0.6, dataset="chest"),
        # a few-shot block: split seeds are part of the run
        record("full", 0, 0.5, dataset="chest", shots=2, split_seed=0),
        record("full", 0, 0.5, dataset="chest", shots=2, split_seed=1),
        record("vpt", 0, 0.5, dataset="chest", shots=2, split_seed=1),
        # another backbone: its methods are not expected on vit_t
        record("linear", 0, 0.6, backbone="vit_s"),
    ]  # fmt: skip
    got = lines(missing_in_grid(records_frame(recs)))
    assert got == [
        "derm · vit_t / lora: 1 of 3 runs have no record (seed 1)",
        "derm · vit_t / vpt: 3 of 3 runs have no record (seed 0, seed 1, seed 2)",
        "chest · vit_t / full: 1 of 1 runs have no record (seed 0)",
        "chest · vit_t / lora: 1 of 1 runs have no record (seed 0)",
        "chest 2-shot · vit_t / lora: 2 of 2 runs have no record (split 0 seed 0, split 1 seed 0)",
        "chest 2-shot · vit_t / vpt: 1 of 2 runs have no record (split 0 seed 0)",
    ]


def test_complete_grid_has_no_missing_cells_and_reports_say_where_they_are(tmp_path) -> None:
    full = [record(m, s, 0.5) for m in ("full", "lora") for s in (0, 1)]
    assert missing_in_grid(records_frame(full)).empty
    assert "Missing cells" not in render_markdown(records_frame(full))
    partial = full[:-1]
    text = render_markdown(records_frame(partial))
    assert "## Missing cells" in text and "derm · vit_t / lora: 1 of 2 runs" in text
    results = write(tmp_path / "results", partial)
    res = bench("report", "--results", str(results), "--out", str(tmp_path / "out"), "--no-plots")
    assert (
        "missing cells" in res.output and "lora: 1 of 2 runs have no record (seed 1)" in res.output
    )
    assert "derm · vit_t / lora: 1 of 2 runs" in (tmp_path / "out" / "index.html").read_text()


# --------------------------------------------------------------------------- baseline


def test_baseline_option(tmp_path) -> None:
    recs = [record(m, s, v + 0.01 * s) for m, v in (("full", 0.8), ("lora", 0.7), ("linear", 0.6))
            for s in range(6)]  # fmt: skip
    results = write(tmp_path / "results", recs)
    out = tmp_path / "out"
    res = bench("report", "--results", str(results), "--out", str(out), "--no-plots")
    assert res.exit_code == 0, res.output
    assert "## Against full over blocks: Wilcoxon signed-rank" in (out / "stats.md").read_text()
    res = bench("report", "--results", str(results), "--out", str(out), "--no-plots",
                "--baseline", "linear")  # fmt: skip
    assert res.exit_code == 0, res.output
    stats_md = (out / "stats.md").read_text()
    # lora beats linear by 10 points on all 6 seeds of the one block: seeds of one block are not
    # independent pairs over blocks, so one pair and no Wilcoxon; within the block, the seeds
    # pair for a t-test, which has no variance here (every seed differs by the same amount)
    assert "## Against linear over blocks: Wilcoxon signed-rank" in stats_md
    assert "No test: at most 1 block(s) pair a method with linear; the test needs 6." in stats_md
    assert "## Within each block: seed-paired t-tests against linear" in stats_md
    assert "No test: every seed differs by the same amount; t undefined." in stats_md
    res = bench("report", "--results", str(results), "--out", str(out), "--baseline", "vpt")
    assert res.exit_code == 2
    assert "--baseline vpt: no record of that method; methods in the report: full, linear, lora" \
        in res.output  # fmt: skip


# --------------------------------------------------------------------------- terminal summary


def test_terminal_summary_uses_the_score_tables_numbers() -> None:
    recs = [record("full", 0, 0.80), record("full", 1, 0.83), record("full", 2, 0.0, status="oom"),
            record("lora", 0, 0.70, rank=8), record("lora", 0, 0.60, rank=4)]  # fmt: skip
    df = records_frame(recs)
    summary = summarize(df)
    scores = score_table(df)
    assert list(summary["mean"]) == pytest.approx(list(scores["mean"]))
    full = summary[summary["method"] == "full"].iloc[0]
    assert full["seeds"] == 3 and full["status"] == "2 ok, 1 oom"
    assert full["mean"] == pytest.approx(81.5) and full["std"] == pytest.approx(2.1213203)
    assert full["ece"] == pytest.approx(5.0) and full["train_s"] == pytest.approx(2.0)
    text = render_markdown(df)
    # two settings of lora in one block are two rows, told apart by their setting hash
    lora_rows = [line for line in text.splitlines() if line.startswith("| lora [")]
    assert len(lora_rows) == 2


def test_tables_list_methods_in_the_order_the_cells_ran() -> None:
    recs = []
    for i, method in enumerate(("vpt", "full", "lora")):  # as `--methods vpt,full,lora` runs them
        r = record(method, 0, 0.5)
        r["started_at"] = f"2026-11-24T03:0{i}:00+00:00"
        recs.append(r)
    recs.reverse()  # files come back sorted by name, not by time
    assert list(summarize(records_frame(recs))["method"]) == ["vpt", "full", "lora"]


def test_costs_measured_at_a_retried_batch_are_flagged() -> None:
    from bench.report.efficiency import efficiency_display, efficiency_table

    recs = [record("full", s, 0.8) for s in range(2)] + [record("lora", s, 0.7) for s in range(2)]
    for r in recs:
        r["config"]["batch_size"] = 32
    recs[3]["training"] = {"batch_size_used": 8}  # lora seed 1 trained after --oom-retry
    eff = efficiency_table(records_frame(recs)).set_index("method")
    assert "out of memory" not in eff.loc["full", "note"]
    note = ("costs of 1 of 2 runs measured at batch 8 after CUDA out of memory (--oom-retry; "
            "requested 32)")  # fmt: skip
    assert eff.loc["lora", "note"].endswith(note)  # after this test's PME note (no memory)
    assert any(note in n and "/ lora" in n for n in efficiency_display(
        efficiency_table(records_frame(recs))).footnotes)  # fmt: skip
