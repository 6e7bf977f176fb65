"""Launchers for `bench run`: `local` runs the grid in this process (bench.execute), `subprocess`
runs each cell in a fresh process (one per GPU with --gpus), `slurm` submits one job per cell
through submitit. Every launched cell runs in a worker (bench.launchers.worker) given its
`cell.to_dict()`. `bench tune` launches each stage of its search this way (bench.launchers.stages)."""

from __future__ import annotations

from typing import Any

from bench.grid import GridRequest
from bench.launchers.options import LaunchOptions, launch_options
from bench.launchers.outcome import LaunchOutcome
from bench.launchers.processes import run_subprocess
from bench.launchers.slurm import CellJob, run_slurm

__all__ = ["CellJob", "LaunchOptions", "LaunchOutcome", "launch", "launch_options", "run_slurm"]


def launch(req: GridRequest, opts: LaunchOptions, *, console: Any, progress: bool) -> LaunchOutcome:
    """Run the grid with a launcher other than `local`."""
    if opts.kind == "subprocess":
        return run_subprocess(req, opts, console=console, progress=progress)
    if opts.kind == "slurm":
        return run_slurm(req, opts, console=console)
    raise ValueError(f"launch() runs subprocess or slurm, not {opts.kind!r}")
