"""What the tracker tests share: the CLI in-process, TensorBoard's reader, the record's curves
compared with a tracker's, and fake `wandb` and `mlflow` modules that record their calls."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bench.cli import app
from bench.records import read_record

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def only_record(results: Path) -> dict[str, Any]:
    paths = sorted(results.glob("*.json"))
    assert len(paths) == 1, paths
    rec = read_record(paths[0])
    assert rec is not None
    return rec


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of a TensorBoard run folder, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def texts(folder: Path) -> dict[str, str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag.split("/")[0]: acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
        for tag in acc.Tags()["tensors"]
    }


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)  # event files keep float32


def assert_curves_match(curves: dict[str, list[tuple[int, float]]], rec: dict[str, Any]) -> None:
    """Step losses, epoch losses and validation metrics as the record has them."""
    history, steps = rec["training"]["history"], rec["training"]["steps"]
    per_epoch = steps // len(history)  # the tiny split: 48 images, batches of 16
    losses = curves["train/loss"]
    assert [s for s, _ in losses] == list(range(1, steps + 1))
    epoch_losses = curves["train/epoch_loss"]
    assert [s for s, _ in epoch_losses] == [per_epoch * (e + 1) for e in range(len(history))]
    for e, entry in enumerate(history):
        assert close(epoch_losses[e][1], entry["train_loss"])
        # equal batches: the epoch's loss is the mean of its steps' losses
        chunk = [v for _, v in losses[e * per_epoch : (e + 1) * per_epoch]]
        assert close(sum(chunk) / len(chunk), entry["train_loss"])
        for metric, value in entry["val"].items():
            assert close(curves[f"val/{metric}"][e][1], value)


class FakeWandbRun:
    def __init__(self, kwargs: dict[str, Any], fail_on_log: int | None) -> None:
        self.init = kwargs
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.fail_on_log = fail_on_log

    def log(self, data: dict[str, float], step: int | None = None) -> None:
        if self.fail_on_log is not None and len(self.logged) + 1 == self.fail_on_log:
            raise ConnectionError("network down")
        self.logged.append((step, dict(data)))

    def finish(self, exit_code: int | None = None) -> None:
        self.exit_code = exit_code


def fake_wandb(monkeypatch, fail_on_log: int | None = None) -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs: Any) -> FakeWandbRun:
        run = FakeWandbRun(kwargs, fail_on_log)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def fake_mlflow(monkeypatch) -> types.ModuleType:
    module = types.ModuleType("mlflow")
    module.calls = []

    def recorder(name: str):
        return lambda *args, **kwargs: module.calls.append((name, args, kwargs))

    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metric",
                 "set_tag", "end_run"):  # fmt: skip
        setattr(module, name, recorder(name))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return module


def metric_series(mlflow: types.ModuleType) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for name, args, kwargs in mlflow.calls:
        if name == "log_metric":
            out.setdefault(args[0], []).append((kwargs["step"], args[1]))
    return out
