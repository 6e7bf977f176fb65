"""`bench profile`: each method in a fresh process, inference then training, medians over
rounds, FPT+ trained from preloaded features with its frozen model released, every method at one
resolution; profile records saved and shown by `bench report`."""

from __future__ import annotations

import json
import statistics
import sys

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.profiling import common_img_size, profile_method

runner = CliRunner()


def test_profile_method_fpt_trains_from_features_without_the_lpm() -> None:
    out = profile_method(
        "fpt", backbone="test_vit", img_size=64, batch_size=2, steps=2, repeats=3, device="cpu"
    )
    assert out["method"] == "fpt-plus" and out["preloaded_features"] is True
    assert out["img_size"] == 64 and out["method_info"]["side_size"] == 64  # >= 4 patches a side
    step = out["step"]
    assert step["rounds"] == 3 and step["steps_per_round"] == 2
    # the reported figure is the median over the rounds' medians
    assert step["step_time_median_s"] == statistics.median(step["step_time_round_medians_s"])
    assert out["train_memory_mb"] > 0 and out["inference"]["throughput_img_s"] > 0
    assert set(out["memory"]) == {"inference", "train"} and out["precision"] == "fp32"
    full = profile_method(
        "full", backbone="test_vit", img_size=64, batch_size=2, steps=1, repeats=1, device="cpu"
    )
    # the head on top of the backbone
    assert full["preloaded_features"] is False and full["trainable_pct"] > 100
    assert full["compile_s"] is None


def test_profile_uses_fpt_resolution_for_every_method() -> None:
    # test_vit is /16 and native 160: the FPT rule asks 32 patches a side, 512 px.
    assert common_img_size(["full", "fpt-plus"], "test_vit", {}) == 512
    assert common_img_size(["full", "linear"], "test_vit", {}) == 160


@pytest.mark.slow
def test_profile_cli_prints_saves_and_report_shows(tmp_path) -> None:
    results = tmp_path / "results"
    res = runner.invoke(
        app,
        ["profile", "--methods", "full,fpt", "--backbone", "test_vit", "--img-size", "64",
         "--batch-size", "2", "--steps", "1", "--repeats", "2", "--device", "cpu",
         "--results", str(results)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "fpt-plus (cached)" in res.output and "100.00 %" in res.output  # full against itself
    assert "64/64" in res.output  # LPM / side resolution (4 patches a side at least)
    assert "infer img/s" in res.output and "median of 2 rounds x 1 steps" in res.output
    saved = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    assert sorted(r["profile"]["method"] for r in saved) == ["fpt-plus", "full"]
    assert all(r["kind"] == "profile" and r["status"] == "ok" for r in saved)
    assert all(r["run_id"].startswith("profile-") and "-64px-b2-cpu-" in r["run_id"] for r in saved)
    # profile records sit beside grid records: the report shows them apart, never as runs
    out = tmp_path / "out"
    rep = runner.invoke(app, ["report", "--results", str(results), "--out", str(out),
                              "--no-plots"], env={"COLUMNS": "200"})  # fmt: skip
    assert rep.exit_code == 0, rep.output
    assert "profile: test_vit · 64 px · batch 2 · cpu · fp32" in rep.output
    md = (out / "profile.md").read_text()
    assert "| fpt-plus (cached)" in md and "| full" in md
    assert "Profile: test_vit" in (out / "index.html").read_text()
    assert "(0 record(s))" in rep.output  # no grid record among them


def test_profile_cli_bad_input_is_one_line() -> None:
    for args, message in (
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--precision", "fp8"], "'fp8' is not one of 'auto',"),  # click's, listing them
        (["--precision", "bf16", "--device", "cpu"], "on CPU use fp32"),
    ):
        res = runner.invoke(app, ["profile", *args])
        assert res.exit_code == 2, args
        assert message in res.output, res.output


def test_cuda_oom_becomes_an_oom_result(monkeypatch, capsys) -> None:
    import torch

    import bench.profiling as profile

    def oom(**kwargs):
        raise torch.cuda.OutOfMemoryError("Tried to allocate 2.00 GiB")

    monkeypatch.setattr(profile, "profile_method", oom)
    monkeypatch.setattr(sys, "argv", ["x", json.dumps({"method": "full", "batch_size": 512,
                                                       "img_size": 224})])  # fmt: skip
    profile._main()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "oom" and "at batch size 512" in out["error"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_on_gpu_uses_bf16_and_allocator_peaks() -> None:  # pragma: no cover (GPU)
    out = profile_method("full", backbone="test_vit", img_size=64, batch_size=4, steps=3,
                         repeats=2, device="cuda")  # fmt: skip
    assert out["precision"] == "bf16"
    mem = out["memory"]["train"]
    assert mem["peak_reserved_mb"] >= mem["peak_allocated_mb"] >= out["train_memory_mb"] > 0
    assert out["train_memory_mb"] == mem["peak_allocated_mb"] - out["baseline_mb"]
