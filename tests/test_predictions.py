"""Each finished cell's test and validation predictions beside its record
(`<run id>.predictions.npz`, bench/predictions.py): what a real tiny cell saves matches its
record's metrics and its splits' labels, the report's frame finds the file, old records without
one load and report as before, a crash between the file and the record reruns the cell, and
nothing that reads or tidies a results folder takes the file for a record or removes it."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bench.predictions
import bench.records
from bench.cli import app
from bench.errors import UserError
from bench.execute import run_grid
from bench.grid import GridRequest, data_key, plan
from bench.harness import run_cell
from bench.predictions import (
    PENDING,
    load_predictions,
    predictions_path,
    save_predictions,
)
from bench.records import load_records, read_record, record_path, remove_stale_temp
from bench.report import records_frame
from bench.status import summarise
from tests.conftest import write_medmnist_npz

SIZES = {"train": 48, "val": 24, "test": 24}  # write_medmnist_npz's default split sizes


def request(data_root: Path, results: Path) -> GridRequest:
    return GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0],
                       backbone="test_vit", pretrained=False, img_size=32, epochs=3,
                       batch_size=16, results=results, data_root=data_root)  # fmt: skip


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    """One real tiny cell (linear on the test ViT), run through the grid: (plan, request)."""
    root = tmp_path_factory.mktemp("pred")
    (root / "data").mkdir()
    write_medmnist_npz(root / "data" / "pneumoniamnist.npz")
    req = request(root / "data", root / "results")
    the_plan = plan(req, progress=False)
    out = run_grid(the_plan, req)
    assert out.ran == 1 and out.records[0]["status"] == "ok", out.records[0].get("traceback")
    return the_plan, req


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half: the AUC by its definition."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_a_finished_cell_saves_what_its_metrics_were_computed_from(grid) -> None:
    the_plan, req = grid
    (cell,) = the_plan.cells
    record = read_record(record_path(req.results, cell.run_id))
    path = predictions_path(req.results, cell.run_id)
    assert record["predictions"] == {
        "file": f"{cell.run_id}.predictions.npz",
        "splits": {"test": SIZES["test"], "val": SIZES["val"]},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    preds = load_predictions(path, sha256=record["predictions"]["sha256"])
    assert set(preds) == {"test", "val"}
    data = the_plan.datasets[data_key(cell)]
    for split in ("test", "val"):
        logits, labels = preds[split]
        assert logits.dtype == np.float32 and logits.shape == (SIZES[split], 2)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, data.splits[split].labels.numpy())
    # the record's test scores, recomputed from the file by their definitions
    logits, labels = preds["test"]
    test = record["metrics"]["test"]
    assert test["accuracy"] == np.mean(logits.argmax(1) == labels)
    assert test["auc"] == pytest.approx(auc(logits[:, 1] - logits[:, 0], labels), abs=1e-12)
    # and the selected epoch's validation score: the epoch's own logits, not a later pass
    logits, labels = preds["val"]
    best = record["training"]["history"][record["training"]["best_epoch"]]["val"]
    assert record["metrics"]["primary_metric"] == "auc"
    assert best["auc"] == pytest.approx(auc(logits[:, 1] - logits[:, 0], labels), abs=1e-12)
    assert best["accuracy"] == np.mean(logits.argmax(1) == labels)
    assert PENDING not in record


def test_the_frame_points_at_the_file_and_names_task_and_classes(grid) -> None:
    the_plan, req = grid
    (cell,) = the_plan.cells
    (row,) = records_frame(load_records(req.results).records).to_dict("records")
    assert row["predictions_file"] == str(predictions_path(req.results, cell.run_id).absolute())
    (rec,) = load_records(req.results).records
    assert row["predictions_sha256"] == rec["predictions"]["sha256"]
    assert row["task"] == "binary"
    assert row["classes"] == list(the_plan.datasets[data_key(cell)].card.classes)
    # a record handed over without its folder (not read by load_records) names no file
    (plain,) = records_frame([read_record(record_path(req.results, cell.run_id))]).to_dict(
        "records"
    )
    assert plain["predictions_file"] is None


def test_the_file_is_no_record_and_tidying_leaves_it(grid) -> None:
    the_plan, req = grid
    (cell,) = the_plan.cells
    path = predictions_path(req.results, cell.run_id)
    before = path.read_bytes()
    loaded = load_records(req.results)
    assert [r["run_id"] for r in loaded.records] == [cell.run_id] and loaded.notes() == []
    summary = summarise(req.results)
    assert summary.total()["done"] == 1 and summary.skipped == []
    # an hour-old predictions file and a dead writer's temp file of one: only the temp goes
    dead = req.results / f".{cell.run_id}.predictions.npz.ab12cd34.tmp"
    dead.write_bytes(b"half a file")
    old = time.time() - 7200
    for p in (path, dead):
        os.utime(p, (old, old))
    assert remove_stale_temp(req.results) == 1
    assert not dead.exists() and path.read_bytes() == before
    # a rerun skips the finished cell and leaves its predictions as they are
    again = run_grid(plan(req, progress=False), req)
    assert (again.ran, again.skipped) == (0, 1) and path.read_bytes() == before


def test_a_trial_saves_nothing(grid) -> None:
    the_plan, _ = grid
    (cell,) = the_plan.cells
    trial = dataclasses.replace(cell, tuning={"role": "trial"})
    record = run_cell(trial, the_plan.datasets[data_key(cell)], the_plan.source)
    assert record["status"] == "trial" and PENDING not in record


def test_fit_keeps_the_selected_epochs_validation_logits() -> None:
    from timm.models.vision_transformer import VisionTransformer

    from bench.train import TrainSettings, fit
    from bench.transforms import Preprocess

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=1, num_heads=2,
                              num_classes=3)  # fmt: skip
    images = torch.randint(0, 255, (32, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 3, (32,))
    settings = TrainSettings(
        epochs=3, batch_size=16, optimizer="adamw", lr=1e-2, weight_decay=0.0,
        warmup_epochs=0.0, grad_clip=1.0, seed=3, device=torch.device("cpu"), precision="fp32",
        preprocess=Preprocess(img_size=16, augment="none"),
    )  # fmt: skip
    passes: list[torch.Tensor] = []

    def score(logits, y):  # the middle epoch scores best
        passes.append(logits.clone())
        return [0.1, 0.9, 0.5][len(passes) - 1], {}

    result = fit(model, (images, labels), (images[:8], labels[:8]), settings, score=score)
    assert result.best_epoch == 1 and not torch.equal(passes[1], passes[2])
    assert torch.equal(result.val_logits, passes[1]) and result.val_logits.dtype == torch.float32
    assert torch.equal(result.val_labels, labels[:8])


# ------------------------------------------------------------- saving, through a fake cell


def fake_cell(status: str = "ok", labels=(0, 1, 1)):
    """A run_cell that trains nothing and hands over fixed predictions when `ok`."""

    def run(cell, data, source, *, on_step=None, on_preload=None):
        record = {"schema": 1, "run_id": cell.run_id, "status": status, "error": None,
                  "config": cell.to_dict(), "metrics": {"primary_metric": "accuracy",
                  "primary": 1.0, "test": {"accuracy": 1.0}}}  # fmt: skip
        if status == "ok":
            logits = np.eye(2)[list(labels)] * 3.0
            record[PENDING] = {"test": (logits, np.array(labels)), "val": (logits, labels)}
        return record

    return run


def fake_plan(tmp_path: Path):
    """The tiny grid's plan, with no data read: for cells that train nothing."""
    req = request(tmp_path / "data", tmp_path / "results")
    dry = plan(req, dry_run=True)
    return dataclasses.replace(dry, datasets={data_key(c): None for c in dry.cells}), req


def test_a_crash_between_the_file_and_the_record_reruns_the_cell(tmp_path, monkeypatch) -> None:
    the_plan, req = fake_plan(tmp_path)
    (cell,) = the_plan.cells

    class Killed(BaseException):
        pass

    def killed(results, record):
        raise Killed  # the process dies after the predictions, before the record

    monkeypatch.setattr(bench.records, "write_record", killed)
    with pytest.raises(Killed):
        run_grid(the_plan, req, run_cell=fake_cell(labels=(1, 0, 0)))
    assert predictions_path(req.results, cell.run_id).exists()
    assert not record_path(req.results, cell.run_id).exists()
    assert load_records(req.results).records == []
    monkeypatch.undo()
    out = run_grid(the_plan, req, run_cell=fake_cell(labels=(0, 1, 1)))
    assert out.ran == 1
    (rec,) = load_records(req.results).records
    preds = load_predictions(predictions_path(req.results, cell.run_id),
                             sha256=rec["predictions"]["sha256"])  # fmt: skip
    # the rerun's predictions, not the dead run's
    np.testing.assert_array_equal(preds["test"].labels, [0, 1, 1])


def test_failed_cells_save_nothing_and_old_records_report_as_before(tmp_path) -> None:
    the_plan, req = fake_plan(tmp_path)
    (cell,) = the_plan.cells
    run_grid(the_plan, req, run_cell=fake_cell(status="failed"))
    assert list(req.results.glob("*.npz")) == []
    # an ok record from before predictions were saved: loads, reports, and is not rerun
    old = {**fake_cell()(cell, None, None), "status": "ok"}
    del old[PENDING]
    bench.records.write_record(req.results, old)
    (rec,) = load_records(req.results).records
    (row,) = records_frame([rec]).to_dict("records")
    assert row["predictions_file"] is None and row["accuracy"] == 1.0
    assert run_grid(the_plan, req, run_cell=fake_cell()).skipped == 1
    result = CliRunner().invoke(app, ["report", "--results", str(req.results), "--out",
                                      str(tmp_path / "report"), "--no-plots"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "index.html").exists()


def test_predictions_that_cannot_be_written_leave_the_record_with_the_reason(
    tmp_path, monkeypatch
) -> None:
    the_plan, req = fake_plan(tmp_path)
    (cell,) = the_plan.cells

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.predictions, "write_atomic", full)
    run_grid(the_plan, req, run_cell=fake_cell())
    (rec,) = load_records(req.results).records
    assert rec["status"] == "ok" and rec["predictions"] == {
        "file": None,
        "error": f"could not write {cell.run_id}.predictions.npz: No space left on device",
    }
    assert records_frame([rec])["predictions_file"].tolist() == [None]


# ------------------------------------------------------------- the file itself


def test_multilabel_labels_are_kept_as_multi_hot_bytes(tmp_path) -> None:
    logits = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, -3.0]], dtype=np.float64)
    multi_hot = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # float, as BCE trains on them
    entry = save_predictions(tmp_path / "x.predictions.npz", {"test": (logits, multi_hot)})
    assert entry["splits"] == {"test": 2}
    (pred,) = load_predictions(tmp_path / "x.predictions.npz").values()
    assert pred.labels.dtype == np.uint8 and pred.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert pred.logits.dtype == np.float32 and pred.logits.tolist() == [[0.5, -1, 2], [1, 1, -3]]
    with pytest.raises(ValueError, match="whole class indices"):
        save_predictions(tmp_path / "y.predictions.npz", {"test": (logits[:, :2], [0.5, 1.0])})
    with pytest.raises(ValueError, match="0/1 multi-hot"):
        save_predictions(tmp_path / "y.predictions.npz", {"test": (logits, multi_hot * 2)})
    with pytest.raises(ValueError, match="do not match"):
        save_predictions(tmp_path / "y.predictions.npz", {"test": (logits, [0, 1, 1])})
    assert not (tmp_path / "y.predictions.npz").exists()


def test_a_damaged_or_foreign_file_is_refused_with_what_to_do(tmp_path) -> None:
    path = tmp_path / "x.predictions.npz"
    entry = save_predictions(path, {"test": (np.zeros((3, 2)), [0, 1, 0])})
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="--force"):
        load_predictions(path)
    with pytest.raises(UserError, match="not the predictions file its record names"):
        load_predictions(path, sha256=entry["sha256"])
    np.savez(path, test_logits=np.array([object()]), test_labels=np.zeros(1))  # needs pickle
    with pytest.raises(UserError, match="damaged"):
        load_predictions(path)
    np.savez(path, logits=np.zeros((1, 2)))
    with pytest.raises(UserError, match="pairs"):
        load_predictions(path)
    with pytest.raises(UserError, match="cannot be read"):
        load_predictions(tmp_path / "missing.predictions.npz")


def test_a_record_naming_a_path_or_a_missing_file_has_none(tmp_path) -> None:
    the_plan, req = fake_plan(tmp_path)
    (cell,) = the_plan.cells
    record = {k: v for k, v in fake_cell()(cell, None, None).items() if k != PENDING}
    save_predictions(tmp_path / f"{cell.run_id}.predictions.npz", {"test": (np.eye(2), [0, 1])})
    own = f"{cell.run_id}.predictions.npz"
    for name in (f"../{own}", own, None):  # outside the folder; its own name, but missing
        bench.records.write_record(req.results, {**record, "predictions": {"file": name}})
        assert records_frame(load_records(req.results).records)["predictions_file"][0] is None
