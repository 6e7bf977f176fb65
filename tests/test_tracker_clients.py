"""W&B and MLflow trackers, exercised with fake `wandb` and `mlflow` modules: run named by the
run id with the cell's config, every step's loss, each epoch's validation metrics, the test
metrics at the end, the record's status, and the environment variables each honours."""

from __future__ import annotations

from bench.trackers import Trackers
from tests.conftest import grid_args
from tests.tracker_helpers import (
    assert_curves_match,
    bench,
    fake_mlflow,
    fake_wandb,
    metric_series,
    only_record,
)


def test_wandb_and_mlflow_follow_the_cell(tmp_path, tiny_data_root, monkeypatch) -> None:
    """One grid with both trackers: each opens a run named by the run id with the cell's config,
    gets every step's loss and each epoch's validation metrics, the test metrics at the end,
    and closes with the record's status; their env variables are honoured."""
    wandb, mlflow = fake_wandb(monkeypatch), fake_mlflow(monkeypatch)
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    for var in (
        "WANDB_DIR",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "2")
    result = bench(*args, "--tracker", "wandb,mlflow")
    assert result.exit_code == 0, result.output
    rec = only_record(results)
    assert rec["status"] == "ok"
    test_metrics = {f"test/{k}": v for k, v in rec["metrics"]["test"].items()}

    (run,) = wandb.runs
    assert run.init == {"project": "my-project", "name": rec["run_id"], "config": rec["config"],
                        "dir": str(results)}  # fmt: skip
    curves: dict[str, list[tuple[int, float]]] = {}
    for step, data in run.logged:
        for key, value in data.items():
            curves.setdefault(key, []).append((step, value))
    assert_curves_match(curves, rec)
    assert {k: run.summary[k] for k in test_metrics} == test_metrics
    assert run.summary["status"] == "ok" and run.exit_code == 0

    names = [name for name, _, _ in mlflow.calls]
    assert names[:4] == ["set_tracking_uri", "set_experiment", "start_run", "log_params"]
    assert names[-2:] == ["set_tag", "end_run"]
    calls = {name: (args, kwargs) for name, args, kwargs in mlflow.calls}
    assert calls["set_tracking_uri"][0] == ((results / "mlruns").resolve().as_uri(),)
    assert calls["set_experiment"][0] == ("medpeft-bench",)
    assert calls["start_run"][1] == {"run_name": rec["run_id"]}
    params = calls["log_params"][0][0]
    assert params["method"] == "linear" and params["seed"] == 0
    assert params["hparams.preload"] == rec["config"]["hparams"]["preload"]
    series = metric_series(mlflow)
    assert_curves_match(series, rec)
    last = rec["training"]["steps"]
    assert {k: series[k] for k in test_metrics} == {k: [(last, v)] for k, v in test_metrics.items()}
    assert calls["set_tag"][0] == ("status", "ok")
    assert calls["end_run"][1] == {"status": "FINISHED"}


def test_wandb_defaults_and_env(tmp_path, monkeypatch) -> None:
    """Default project medpeft-bench and files beside the records; WANDB_DIR leaves the folder
    to wandb; a failed cell ends its run with a non-zero exit code."""
    wandb = fake_wandb(monkeypatch)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    trackers = Trackers(["wandb"], tmp_path / "out")
    with trackers.cell("cell-a", {"method": "linear"}) as tracked:
        tracked.end({"status": "failed", "metrics": None})
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    with trackers.cell("cell-b", {"method": "linear"}) as tracked:
        tracked.end({"status": "ok"})
    first, second = wandb.runs
    assert first.init["project"] == "medpeft-bench" and first.init["dir"] == str(tmp_path / "out")
    assert (tmp_path / "out").is_dir()
    assert first.summary == {"status": "failed"} and first.exit_code == 1
    assert "dir" not in second.init and second.exit_code == 0


def test_mlflow_honours_its_tracking_uri(tmp_path, monkeypatch) -> None:
    mlflow = fake_mlflow(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    with Trackers(["mlflow"], tmp_path).cell("cell-a", {"hparams": {"rank": 8}}) as tracked:
        tracked.step(0.5, 0)
        tracked.end({"status": "oom"})
    names = [name for name, _, _ in mlflow.calls]
    assert "set_tracking_uri" not in names and "set_experiment" not in names
    assert ("log_params", ({"hparams.rank": 8},), {}) in mlflow.calls
    assert ("log_metric", ("train/loss", 0.5), {"step": 1}) in mlflow.calls
    assert mlflow.calls[-1] == ("end_run", (), {"status": "FAILED"})
    assert not (tmp_path / "mlruns").exists()
