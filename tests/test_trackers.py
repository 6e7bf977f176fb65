"""Experiment trackers (`--tracker`): TensorBoard's event files read back equal the record's
curves, a missing package fails on one line before any cell, a failing tracker never costs a
record, the launchers' workers get the trackers, and a grid without trackers imports none of
them. W&B and MLflow themselves: test_tracker_clients.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import UserError
from bench.trackers import Trackers, TrackerWarning, parse_trackers
from tests.conftest import grid_args, subprocess_env
from tests.tracker_helpers import (
    assert_curves_match,
    bench,
    close,
    fake_wandb,
    only_record,
    scalars,
    texts,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ TensorBoard


def test_tensorboard_event_files_hold_the_records_curves(tmp_path, tiny_data_root) -> None:
    """A real 2-epoch grid: the event files read back equal the record's loss curve, validation
    metrics and test metrics; a rerun without --tracker finds the same run id finished."""
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "2")
    first = bench(*args, "--tracker", "tensorboard")
    assert first.exit_code == 0, first.output
    rec = only_record(results)
    assert rec["status"] == "ok"
    folder = results / "tensorboard" / rec["run_id"]
    curves = scalars(folder)
    assert_curves_match(curves, rec)
    last = rec["training"]["steps"]
    primary = rec["metrics"]["primary_metric"]
    assert curves[f"test/{primary}"] == [(last, pytest.approx(rec["metrics"]["primary"]))]
    for metric, value in rec["metrics"]["test"].items():
        assert close(curves[f"test/{metric}"][0][1], value)
    assert close(curves["params/trainable"][0][1], rec["params"]["trainable_params"])
    written = texts(folder)
    assert written["status"] == "ok"
    assert json.loads(written["config"].strip("`\n")) == rec["config"]
    # the tracker is no part of the cell: the same grid without it is already done
    again = bench(*args)
    assert again.exit_code == 0, again.output
    assert "0 cell(s) run, 1 already done" in again.output


def test_tensorboard_rerun_replaces_the_earlier_curves(tmp_path) -> None:
    """--force reruns a cell into the same folder: TensorBoard shows the new curve only."""
    from bench.trackers.tensorboard_writer import TensorBoardTracker

    for losses in ([4.0, 3.0, 2.0], [9.0, 8.0]):
        tracker = TensorBoardTracker(tmp_path)
        tracker.start("cell-a", {"seed": 0})
        for step, loss in enumerate(losses, start=1):
            tracker.log({"train/loss": loss}, step)
        tracker.finish("ok", {"test/auc": 0.5}, len(losses))
        # event files are named by the second they open in: a rerun comes at least a cell later
        time.sleep(1.1)
    curves = scalars(tmp_path / "tensorboard" / "cell-a")
    assert curves["train/loss"] == [(1, 9.0), (2, 8.0)]
    assert curves["test/auc"] == [(2, 0.5)]


# ------------------------------------------------------------------ bad input and failures


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_missing_package_fails_on_one_line_before_any_cell(
    tmp_path, tiny_data_root, monkeypatch, name
) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    results = tmp_path / "results"
    result = bench(*grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "1"),
                   "--tracker", f"tensorboard,{name}")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --tracker {name} needs the {name} package: pip install 'medpeft-bench[{name}]'"
    ]
    assert not list(results.glob("*.json")) and not (results / "tensorboard").exists()


def test_missing_package_stops_run_grid_and_a_worker(tmp_path, tiny_data_root, monkeypatch):
    """The library path (run_grid) and a launcher's worker, which gets the trackers in its
    spec, refuse before any cell too."""
    from bench.execute import run_grid
    from bench.grid import GridRequest, plan
    from bench.launchers.worker import cell_spec, run_worker

    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0],
                      backbone="test_vit", pretrained=False, img_size=32, epochs=1,
                      results=tmp_path / "results", data_root=tiny_data_root, device="cpu",
                      trackers=("mlflow",), tracker_dir=Path("runs"))  # fmt: skip
    planned = plan(req, dry_run=True)
    spec = cell_spec(planned, req, planned.cells[0])
    assert spec["trackers"] == ["mlflow"]
    assert spec["tracker_dir"] == str(Path("runs").resolve())
    monkeypatch.setitem(sys.modules, "mlflow", None)
    ran = []
    with pytest.raises(UserError, match=r"pip install 'medpeft-bench\[mlflow\]'"):
        run_grid(planned, req, run_cell=lambda *a, **k: ran.append(a))
    assert not ran
    assert run_worker(spec, {"kind": "test"}) == 2
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("comet", "--tracker 'comet': expected a comma list of tensorboard, wandb, mlflow"),
        ("none", "--tracker-dir says where trackers write"),
    ],
)
def test_bad_tracker_options(tmp_path, text, message) -> None:
    result = bench("run", "--tracker", text, "--tracker-dir", str(tmp_path / "t"))
    assert result.exit_code == 2
    assert message in result.output


def test_parse_trackers() -> None:
    assert parse_trackers(None) == () and parse_trackers("none") == ()
    assert parse_trackers(" TensorBoard, tensorboard ,") == ("tensorboard",)


def test_failing_tracker_is_dropped_and_the_record_kept(tmp_path, tiny_data_root, monkeypatch):
    """W&B raising on its second log: one warning, no more W&B calls, the cell ends ok with its
    record, and TensorBoard beside it still gets the whole run."""
    wandb = fake_wandb(monkeypatch, fail_on_log=2)
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "2")
    with pytest.warns(TrackerWarning, match="tracker wandb failed .ConnectionError: network down"):
        result = bench(*args, "--tracker", "wandb,tensorboard")
    assert result.exit_code == 0, result.output
    rec = only_record(results)
    assert rec["status"] == "ok"
    (run,) = wandb.runs
    assert len(run.logged) == 1 and run.exit_code is None and run.summary == {}
    curves = scalars(results / "tensorboard" / rec["run_id"])
    assert_curves_match(curves, rec)
    assert texts(results / "tensorboard" / rec["run_id"])["status"] == "ok"


class Recorder:
    """A tracker that records its calls and can raise in one method."""

    name = "recorder"

    def __init__(self, fail_in: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_in = fail_in

    def __getattr__(self, method: str):
        def call(*args: Any) -> None:
            self.calls.append((method, *args))
            if method == self.fail_in:
                raise RuntimeError("wandb not logged in")

        return call


def test_tracker_failing_at_start_is_left_out(tmp_path, monkeypatch) -> None:
    from bench.trackers import session

    trackers = iter([Recorder(fail_in="start"), Recorder()])
    monkeypatch.setattr(session, "make_tracker", lambda name, folder: next(trackers))
    # names that pass the package check here; make_tracker gives the recorders instead
    group = Trackers(["tensorboard", "tensorboard"], tmp_path)
    broken, healthy = group._live
    with pytest.warns(TrackerWarning, match="not logged in"), group.cell("a", {}) as tracked:
        tracked.step(1.0, 0)
        tracked.end({"status": "ok"})
    assert broken.calls == [("start", "a", {})]
    assert healthy.calls == [("start", "a", {}), ("log", {"train/loss": 1.0, "train/epoch": 0}, 1),
                             ("finish", "ok", {}, 1)]  # fmt: skip


def test_interrupted_cell_ends_its_runs_as_interrupted(tmp_path, monkeypatch) -> None:
    from bench.trackers import session

    tracker = Recorder()
    monkeypatch.setattr(session, "make_tracker", lambda name, folder: tracker)
    with pytest.raises(KeyboardInterrupt), Trackers(["tensorboard"], tmp_path).cell("a", {}) as t:
        t.step(2.0, 0)
        raise KeyboardInterrupt
    assert tracker.calls[-1] == ("finish", "interrupted", {}, 1)


# --------------------------------------------------------------------- launchers and defaults


@pytest.mark.slow
def test_tracker_reaches_the_subprocess_worker(tmp_path, tiny_data_root) -> None:
    """--launcher subprocess: the worker process writes the event files, under --tracker-dir."""
    results, elsewhere = tmp_path / "results", tmp_path / "runs"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "1",
                     "--launcher", "subprocess", "--tracker", "tensorboard",
                     "--tracker-dir", str(elsewhere))  # fmt: skip
    result = bench(*args)
    assert result.exit_code == 0, result.output
    rec = only_record(results)
    assert rec["env"]["pid"] != os.getpid()
    assert not (results / "tensorboard").exists()
    assert_curves_match(scalars(elsewhere / "tensorboard" / rec["run_id"]), rec)


@pytest.mark.slow
def test_default_grid_imports_no_tracker(tmp_path, tiny_data_root) -> None:
    """Without --tracker, a whole grid run loads none of the trackers' packages."""
    args = grid_args(tiny_data_root, tmp_path / "results", "--methods", "linear", "--epochs", "1")
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from bench.cli import app\n"
        f"result = CliRunner().invoke(app, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "names = ('tensorboard', 'torch.utils.tensorboard', 'wandb', 'mlflow')\n"
        "print(json.dumps([n for n in names if n in sys.modules]))\n"
    )
    env = {**subprocess_env(), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert len(list((tmp_path / "results").glob("*.json"))) == 1
