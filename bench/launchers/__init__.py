"""Launchers for `bench run`: `local` runs the grid in this process (bench.execute), `subprocess`
runs each cell in a fresh process (one per GPU with --gpus), `slurm` submits one job per cell
through submitit. Every launched cell runs in a worker (bench.launchers.worker) given its
`cell.to_dict()`. `bench tune` launches each stage of its search this way (bench.launchers.stages).

Only the options are imported here: the launchers import torch, which `launch_options` (checked
before anything heavy, so a bad flag fails at once) does not need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.launchers.options import LaunchOptions, launch_options

if TYPE_CHECKING:
    from bench.grid import GridRequest
    from bench.launchers.outcome import LaunchOutcome

__all__ = ["CellJob", "LaunchOptions", "LaunchOutcome", "launch", "launch_options", "run_slurm"]
# name -> the module that defines it, imported on first use
_LAZY = {
    "CellJob": "bench.launchers.slurm",
    "run_slurm": "bench.launchers.slurm",
    "run_subprocess": "bench.launchers.processes",
    "LaunchOutcome": "bench.launchers.outcome",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def launch(req: GridRequest, opts: LaunchOptions, *, console: Any, progress: bool) -> LaunchOutcome:
    """Run the grid with a launcher other than `local`."""
    if opts.kind == "subprocess":
        from bench.launchers.processes import run_subprocess

        return run_subprocess(req, opts, console=console, progress=progress)
    if opts.kind == "slurm":
        from bench.launchers.slurm import run_slurm

        return run_slurm(req, opts, console=console)
    raise ValueError(f"launch() runs subprocess or slurm, not {opts.kind!r}")
