"""`bench profile`: each method in a fresh process, FPT+ trained from preloaded features with its
frozen model released, every method at one resolution."""

from __future__ import annotations

from typer.testing import CliRunner

from bench.cli import app
from bench.profile import common_img_size, profile_method


def test_profile_method_fpt_trains_from_features_without_the_lpm() -> None:
    out = profile_method(
        "fpt", backbone="test_vit", img_size=64, batch_size=2, steps=2, device="cpu"
    )
    assert out["method"] == "fpt-plus" and out["preloaded_features"] is True
    assert (
        out["img_size"] == 64 and out["method_info"]["side_size"] == 64
    )  # at least 4 patches a side
    assert out["step"]["steps_timed"] == 2
    assert out["train_memory_mb"] > 0
    full = profile_method(
        "full", backbone="test_vit", img_size=64, batch_size=2, steps=1, device="cpu"
    )
    assert (
        full["preloaded_features"] is False and full["trainable_pct"] > 100
    )  # the head on top of the backbone


def test_profile_uses_fpt_resolution_for_every_method() -> None:
    # test_vit is /16 and native 160: the FPT rule asks 32 patches a side, 512 px.
    assert common_img_size(["full", "fpt-plus"], "test_vit", {}) == 512
    assert common_img_size(["full", "linear"], "test_vit", {}) == 160


def test_profile_cli_prints_ratio_against_first_method() -> None:
    result = CliRunner().invoke(
        app,
        ["profile", "--methods", "full,fpt", "--backbone", "test_vit", "--img-size", "64",
         "--batch-size", "2", "--steps", "1", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fpt-plus" in result.output and "(cached)" in result.output
    assert "100.00 %" in result.output  # full against itself
    assert "64/64" in result.output  # LPM / side resolution (4 patches a side at least)


def test_profile_cli_bad_input_is_one_line() -> None:
    result = CliRunner().invoke(app, ["profile", "--methods", "nope"])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output
