"""bench.record: every record the suite writes reads back as a Record and writes out unchanged
(values, keys the reader does not know, key order), and what `bench report` cannot read is
refused by Record.from_json exactly as by bench.records.read_record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_medmnist_npz
from typer.testing import CliRunner

from bench import harness
from bench.cli import app
from bench.profiling import profile_record
from bench.record import ABSENT, SCHEMA, Record, UnreadableRecord
from bench.records import read_record, record_text, write_record
from bench.train import Diverged

runner = CliRunner()
TINY = ["--datasets", "pneumoniamnist", "--backbone", "test_vit", "--no-pretrained",
        "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--no-progress"]  # fmt: skip


def invoke(*args: str) -> None:
    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code in (0, 1), res.output


def written(results: Path) -> list[str]:
    return [path.read_text() for path in sorted(results.glob("*.json"))]


def assert_round_trips(text: str) -> None:
    data = json.loads(text)
    record = Record.from_json(data)
    assert record.to_json() == data
    assert record_text(record.to_json()) == text  # the same file, key order included


def failing_fit(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fit(*args, **kwargs):
        raise error

    monkeypatch.setattr(harness, "fit", fit)


@pytest.fixture(scope="module")
def harness_records(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Records the demo harness writes: plain cells (one on cached frozen features), search
    trials and their tuned final, and cells that diverged, failed or ran out of memory."""
    tmp = tmp_path_factory.mktemp("records")
    data = tmp / "data"
    data.mkdir()
    write_medmnist_npz(data / "pneumoniamnist.npz")
    grid = [*TINY, "--data-root", str(data)]
    invoke("run", "--methods", "linear,fpt", "--results", str(tmp / "run"), *grid)
    invoke("tune", "--methods", "linear", "--budget", "2", "--results", str(tmp / "tune"), *grid)
    texts = written(tmp / "run") + written(tmp / "tune")
    with pytest.MonkeyPatch.context() as mp:
        for name, error in [
            ("diverged", Diverged(3, float("nan"))),
            ("failed", RuntimeError("boom")),
            ("oom", torch.cuda.OutOfMemoryError("fake: does not fit")),
        ]:
            failing_fit(mp, error)
            results = tmp / name
            invoke("run", "--methods", "linear", "--results", str(results), "--oom-retry", *grid)
            texts += written(results)
            # a trial that diverges or runs out of memory is a finished trial
            invoke("tune", "--methods", "linear", "--budget", "1", "--results",
                  str(tmp / f"{name}-trial"), *grid)  # fmt: skip
            texts += written(tmp / f"{name}-trial")
    return texts


@pytest.mark.slow
def test_every_record_the_harness_writes_round_trips(harness_records: list[str]) -> None:
    records = [json.loads(text) for text in harness_records]
    statuses = {r["status"] for r in records}
    assert statuses == {"ok", "trial", "diverged", "failed", "oom"}
    outcomes = {r["trial"]["outcome"] for r in records if r["status"] == "trial"}
    assert outcomes == {"ok", "diverged", "oom"}
    keys = set().union(*records)
    assert {"feature_cache", "method_info", "hyperparameters", "tuning", "traceback",
            "diverged_step", "oom_retries", "started_at", "normalization"} <= keys  # fmt: skip
    for text in harness_records:
        assert_round_trips(text)


def test_a_record_built_field_by_field_lists_its_keys_as_the_harness_does(
    harness_records: list[str],
) -> None:
    for text in harness_records:
        data = json.loads(text)
        if data["status"] == "ok" or data.get("trial", {}).get("outcome") == "ok":
            built = Record(**data)  # as a writer fills it, with no key order to follow
            assert list(built.to_json()) == list(data)


def hand_made() -> list[dict]:
    """Records the harness does not write in the tests above: a profile, a launcher's, a
    scheduled search's final, and one of a CUDA machine."""
    profile = profile_record(
        {"method": "lora", "backbone": "test_vit", "img_size": 32, "batch_size": 8,
         "device": "cpu", "precision": "fp32", "compile": False, "compile_s": None,
         "trainable_pct": 1.5, "train_memory_mb": 12.0, "inference_memory_mb": 3.0,
         "step": {"step_time_median_s": 0.1, "throughput_img_s": 80.0, "spread": None},
         "inference": {"throughput_img_s": 200.0}, "hparams": {}},
        env={"pid": 1}, busy=None,
    )  # fmt: skip
    oom_profile = {**profile, "status": "oom", "error": "CUDA out of memory at batch size 8"}
    cell = {
        "schema": SCHEMA, "run_id": "d-lora-s0-0123456789ab", "status": "ok", "error": None,
        "config": {"method": "lora", "dataset": "d", "seed": 0, "backbone": "b", "lr": 0.1},
        "gpu_other_processes": [{"pid": 7, "used_mb": None}],
        "cost": {"memory": {"train": {"device": "cuda:0", "peak_allocated_mb": 10.0,
                                      "nvml_process_mb": None}}, "compile_s": 1.5},
        "env": {"pid": 3, "launcher": {"kind": "slurm", "job_id": "42"}},
        "tuning": {"budget": 4, "scheduler": {"name": "halving", "eta": 2, "rungs": []}},
    }  # fmt: skip
    return [profile, oom_profile, cell]


@pytest.mark.parametrize("data", hand_made())
def test_hand_made_records_round_trip(data: dict, tmp_path: Path) -> None:
    assert_round_trips(record_text(data))
    assert read_record(write_record(tmp_path, data)) == data


def test_unknown_keys_round_trip_untouched() -> None:
    """A newer (or older) writer's keys stay where they were, at any depth."""
    data = {"future": [1, {"x": None}], "schema": SCHEMA, "run_id": "r", "status": "ok",
            "config": {"method": "m", "dataset": "d", "seed": 0, "backbone": "b",
                       "someday": True},
            "extra": "a key named like the field", "_order": 3}  # fmt: skip
    record = Record.from_json(data)
    assert record.extra == {"future": [1, {"x": None}], "extra": "a key named like the field",
                            "_order": 3}  # fmt: skip
    assert record.to_json() == data and list(record.to_json()) == list(data)


def test_absent_is_not_null() -> None:
    base = {"schema": SCHEMA, "run_id": "r", "status": "failed",
            "config": {"method": "m", "dataset": "d", "seed": 0, "backbone": "b"}}  # fmt: skip
    assert Record.from_json(base).error is ABSENT
    assert "error" not in Record.from_json(base).to_json()
    assert Record.from_json({**base, "error": None}).to_json()["error"] is None


IDENTITY = {"method": "m", "dataset": "d", "seed": 0, "backbone": "b"}
GOOD = {"schema": SCHEMA, "run_id": "r", "status": "ok", "config": IDENTITY}


@pytest.mark.parametrize(
    ("data", "readable"),
    [
        (GOOD, True),
        ({**GOOD, "schema": 2}, False),
        ({k: v for k, v in GOOD.items() if k != "run_id"}, False),
        ({k: v for k, v in GOOD.items() if k != "status"}, False),
        ({**GOOD, "config": {**IDENTITY, "seed": "0"}}, False),
        ({**GOOD, "config": {k: v for k, v in IDENTITY.items() if k != "seed"}}, False),
        ({**GOOD, "config": {**IDENTITY, "lr": True}}, False),
        ({**GOOD, "trial": {"val_primary": 0.5}}, False),
        ({**GOOD, "trial": None}, True),
        ({**GOOD, "metrics": {"test": {"auc": None},
                              "calibration": {"count": [1], "confidence": []}}}, False),
        ({"schema": SCHEMA, "kind": "profile", "run_id": "p", "status": "ok",
          "profile": {"method": "lora"}}, True),
        ({"schema": SCHEMA, "kind": "profile", "run_id": "p", "status": "ok", "profile": {"method": 3}},
         False),
    ],
)  # fmt: skip
def test_from_json_reads_what_read_record_reads(data: dict, readable: bool, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert (read_record(path) is not None) is readable
    if readable:
        assert Record.from_json(data).to_json() == data
    else:
        with pytest.raises(UnreadableRecord):
            Record.from_json(data)
