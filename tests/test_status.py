"""`bench status`: done, failed, oom, diverged, running and missing cells of a grid from its
records and claims; a folder summary without grid options; unreadable files listed, never
touched (by `bench report` either)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from bench import claims
from bench.cli import app as bench_app
from bench.cli.status import status
from bench.grid import GridRequest, plan
from bench.records import write_record
from bench.status import STATES, summarise
from tests.conftest import dead_pid

# `status` as `bench status` will be registered (a group, so the command is named)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("status")(status)


@app.callback()
def _group() -> None:
    """bench"""


runner = CliRunner()

GRID = ["--methods", "linear,full,lora", "--datasets", "pneumoniamnist", "--backbone", "test_vit",
        "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16",
        "--seeds", "0-2"]  # fmt: skip


def bench_status(results: Path, *args: str):
    return runner.invoke(app, ["status", "--results", str(results), *args], catch_exceptions=False)


def grid_cells(data_root: Path, results: Path, methods: list[str], seeds: list[int]) -> dict:
    req = GridRequest(methods=methods, datasets=["pneumoniamnist"], seeds=seeds, backbone="test_vit",
                     pretrained=False, img_size=32, epochs=1, batch_size=16, results=results,
                     data_root=data_root)  # fmt: skip
    return {(c.method, c.seed): c for c in plan(req, dry_run=True).cells}


def record(cell, status: str, **extra) -> dict:
    errors = {"ok": None, "failed": "RuntimeError: boom", "oom": "CUDA out of memory at batch "
              "size 16", "diverged": "non-finite loss at step 3"}  # fmt: skip
    return {"schema": 1, "run_id": cell.run_id, "status": status, "error": errors[status],
            "config": cell.to_dict(), **extra}  # fmt: skip


def dead_claim(results: Path, run_id: str) -> None:
    folder = claims.claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    info = {**claims.this_process(), "pid": dead_pid(), "run_id": run_id, "token": "x"}
    (folder / f"{run_id}.claim").write_text(json.dumps(info))


def filled_folder(tmp_path: Path, data_root: Path) -> tuple[Path, dict, claims.Claim]:
    """linear: ok, failed, oom; full: diverged, running (live claim), dead claim (missing);
    lora: nothing; plus a profile record and a record of another grid (seed 7)."""
    results = tmp_path / "results"
    cells = grid_cells(data_root, results, ["linear", "full", "lora"], [0, 1, 2])
    states = {("linear", 0): "ok", ("linear", 1): "failed", ("linear", 2): "oom",
              ("full", 0): "diverged"}  # fmt: skip
    for (method, seed), status_ in states.items():
        write_record(results, record(cells[(method, seed)], status_))
    about = {"dataset": "pneumoniamnist", "method": "full", "seed": 1}
    live = claims.try_claim(results, cells[("full", 1)].run_id, about=about)
    assert live is not None  # held by this (live) process
    dead_claim(results, cells[("full", 2)].run_id)
    (other,) = grid_cells(data_root, results, ["linear"], [7]).values()
    write_record(results, record(other, "ok"))
    profile = {"schema": 1, "kind": "profile", "run_id": "profile-linear-x", "status": "ok",
               "error": None, "profile": {"method": "linear"}}  # fmt: skip
    write_record(results, profile)
    return results, cells, live


def test_status_of_a_grid_counts_every_state(tmp_path, tiny_data_root) -> None:
    results, cells, live = filled_folder(tmp_path, tiny_data_root)
    grid = [[c] for c in cells.values()]
    counts = summarise(results, grid).counts()
    zero = dict.fromkeys(STATES, 0)
    assert counts == {
        ("pneumoniamnist", "linear"): {**zero, "done": 1, "failed": 1, "oom": 1},
        ("pneumoniamnist", "full"): {**zero, "diverged": 1, "running": 1, "missing": 1},
        ("pneumoniamnist", "lora"): {**zero, "missing": 3},
    }
    res = bench_status(results, *GRID, "--data-root", str(tiny_data_root))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "1 of 9 cell(s) done, 4 missing, 1 running" in out
    host, pid = claims.this_process()["host"], claims.this_process()["pid"]
    assert f"running pneumoniamnist/full/seed 1: on {host} (pid {pid})" in out
    assert "failed pneumoniamnist/linear/seed 1: RuntimeError: boom" in out
    assert "oom pneumoniamnist/linear/seed 2: CUDA out of memory at batch size 16" in out
    assert "1 claim(s) left by runners that died" in out
    assert "skipped" not in out  # the profile record is a record, just not a grid cell
    live.release()
    assert "0 running" in bench_status(results, *GRID, "--data-root", str(tiny_data_root)).output


def test_status_without_grid_options_summarises_the_folder(tmp_path, tiny_data_root) -> None:
    results, _, live = filled_folder(tmp_path, tiny_data_root)
    summary = summarise(results)
    zero = dict.fromkeys(STATES, 0)
    # seed 7 counts here (it is in the folder); the profile record never does; the live
    # claim's cell has no record and still shows, as running
    assert summary.counts() == {
        ("pneumoniamnist", "full"): {**zero, "diverged": 1, "running": 1},
        ("pneumoniamnist", "linear"): {**zero, "done": 2, "failed": 1, "oom": 1},
    }
    assert sum(summary.total().values()) == 6 and summary.stale_claims == 1
    res = bench_status(results)
    assert res.exit_code == 0, res.output
    assert "missing" not in res.output  # no grid, nothing can be missing
    assert "6 cell(s) with a record or a live claim" in res.output
    live.release()


def test_unreadable_files_are_listed_and_left_untouched(tmp_path, tiny_data_root) -> None:
    """Corrupt and foreign JSON files, one of them where a cell's record goes: `bench status`
    (folder and grid) and `bench report` list them, finish, and leave them byte-identical."""
    results = tmp_path / "results"
    run = runner.invoke(
        bench_app,
        ["run", *GRID, "--methods", "linear", "--seeds", "0", "--data-root", str(tiny_data_root),
         "--results", str(results), "--no-progress"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    blocked = grid_cells(tiny_data_root, results, ["linear"], [1])[("linear", 1)]
    bad = {
        "corrupt.json": b'{"schema": 1, "run_id": "cut-off-mid-wr',
        "foreign.json": b'{"hello": "not a record"}\n',
        "list.json": b"[1, 2, 3]",
        "binary.json": b"\xff\xfe\x00garbage",
        f"{blocked.run_id}.json": b'{"schema": 7, "run_id": "someone else"}',
    }
    for name, data in bad.items():
        (results / name).write_bytes(data)
    stamps = {name: (results / name).stat().st_mtime_ns for name in bad}

    def untouched() -> None:
        for name, data in bad.items():
            assert (results / name).read_bytes() == data, name
            assert (results / name).stat().st_mtime_ns == stamps[name], name

    folder = bench_status(results)
    grid = bench_status(results, *GRID, "--methods", "linear", "--seeds", "0,1",
                        "--data-root", str(tiny_data_root))  # fmt: skip
    report = runner.invoke(
        bench_app, ["report", "--results", str(results), "--out", str(tmp_path / "rep"),
                    "--no-plots"], catch_exceptions=False,
    )  # fmt: skip
    for res in (folder, grid, report):
        assert res.exit_code == 0, res.output
        text = "".join(res.output.split())  # rich may wrap a long path
        for name in bad:
            assert str(results / name) in text, (name, res.output)
    grid_text = " ".join(grid.output.split())
    assert "sits where the record of pneumoniamnist/linear/seed 1 goes" in grid_text
    assert "1 of 2 cell(s) done, 1 missing" in grid_text
    untouched()
    assert not claims.claims_dir(results).exists() or not any(claims.claims_dir(results).iterdir())


def test_status_device_auto_counts_cells_run_on_either_device(tmp_path, tiny_data_root) -> None:
    results = tmp_path / "results"
    (cell,) = grid_cells(tiny_data_root, results, ["linear"], [0]).values()
    assert cell.device == "cpu"  # this machine; a GPU grid's records say cuda
    gpu = cell.__class__(**{**cell.to_dict(), "device": "cuda", "precision": "bf16"})
    write_record(results, record(gpu, "ok"))
    one = [*GRID, "--methods", "linear", "--seeds", "0", "--data-root", str(tiny_data_root)]
    assert "1 of 1 cell(s) done" in bench_status(results, *one).output  # --device auto
    assert "1 of 1 cell(s) done" in bench_status(results, *one, "--device", "cuda").output
    assert "0 of 1 cell(s) done, 1 missing" in bench_status(results, *one, "--device", "cpu").output
    # a grid not run yet: everything missing, and nothing is created
    fresh = tmp_path / "fresh"
    assert "0 of 1 cell(s) done, 1 missing" in bench_status(fresh, *one).output
    assert not fresh.exists()


def test_status_bad_input_is_one_line(tmp_path) -> None:
    res = bench_status(tmp_path / "nowhere")
    assert res.exit_code == 2 and "no results folder" in res.stderr
    res = bench_status(tmp_path, "--protocol", "fptplus", "--methods", "linear")
    assert res.exit_code == 2 and "sets the grid; drop --methods" in res.stderr
    res = bench_status(tmp_path, "--methods", "nope")
    assert res.exit_code == 2 and "unknown method 'nope'" in res.stderr
