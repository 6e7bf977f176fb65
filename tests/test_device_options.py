"""--device and --precision refused before torch is imported only where the answer is certain,
with the full rules' messages."""

from __future__ import annotations

import pytest
import torch

from bench import device_options
from bench.device_options import check_device_options, no_gpu_here
from bench.errors import UserError
from bench.grid import resolve_device
from bench.precision import choose_precision


def test_no_gpu_here_is_never_wrong_about_this_machine() -> None:
    if no_gpu_here():  # the early check's premise: torch then sees no GPU either
        assert not torch.cuda.is_available()
        assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_autocast_is_refused_early_as_later(precision: str) -> None:
    with pytest.raises(UserError) as early:
        check_device_options("cpu", precision)
    with pytest.raises(UserError) as full:
        choose_precision(precision, "cpu")
    assert str(early.value) == str(full.value)


def test_without_a_gpu_node_cuda_and_auto_autocast_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(device_options, "no_gpu_here", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as early:
        check_device_options("cuda", "auto")
    with pytest.raises(UserError) as full:
        resolve_device("cuda")
    assert str(early.value) == str(full.value)
    with pytest.raises(UserError, match="--precision bf16 is a GPU autocast"):
        check_device_options("auto", "bf16")
    check_device_options("auto", "auto")
    check_device_options("cpu", "fp32")


def test_with_a_gpu_node_everything_waits_for_torch(monkeypatch) -> None:
    monkeypatch.setattr(device_options, "no_gpu_here", lambda: False)
    for device in ("auto", "cuda"):
        for precision in ("auto", "bf16", "fp16", "fp32"):
            check_device_options(device, precision)


def test_mps_off_macos_and_unknown_devices(monkeypatch) -> None:
    monkeypatch.setattr(device_options.sys, "platform", "linux")
    with pytest.raises(UserError, match="--device mps: torch has no MPS device here"):
        check_device_options("mps", "auto")
    with pytest.raises(UserError) as early:
        check_device_options("tpu", "auto")
    with pytest.raises(UserError) as full:
        resolve_device("tpu")
    assert str(early.value) == str(full.value) == "--device 'tpu': expected auto, cpu, cuda or mps"


@pytest.mark.parametrize(
    "argv",
    [
        ["--launcher", "subprocess", "--gpus", "0"],  # the cells run on CUDA GPU 0
        ["--launcher", "slurm", "--slurm-cluster", "local", "--device", "cuda"],  # run here
    ],
)
def test_cells_that_run_here_on_cuda_are_refused_without_a_gpu(monkeypatch, tmp_path, argv):
    from typer.testing import CliRunner

    from bench.cli import app

    monkeypatch.setattr(device_options, "no_gpu_here", lambda: True)
    res = CliRunner().invoke(app, ["run", *argv, "--results", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "--device cuda: no CUDA device is visible to torch" in res.output
