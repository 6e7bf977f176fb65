"""Which trackers exist, what each needs installed, and how `--tracker` names them.

Nothing here imports a tracker's package: presence is checked with `importlib.util.find_spec`,
so a grid without trackers never loads TensorBoard, W&B or MLflow."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Protocol

from bench.errors import UserError

# tracker name -> the package it imports (the extra of the same name installs it)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TRACKERS = tuple(PACKAGES)


class Tracker(Protocol):
    """One experiment tracker following one cell at a time. Any method may raise: the caller
    (bench.trackers.session) drops a tracker that does, the cell and its record go on."""

    name: str

    def start(self, run_id: str, config: dict[str, Any]) -> None:
        """Open a run named `run_id`; `config` is the cell's identity and hyperparameters."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at a global training step."""

    def finish(self, status: str, summary: dict[str, float], step: int) -> None:
        """The record's final figures at the last step, then close the run with the record's
        status (ok, failed, oom, diverged, trial, or interrupted when no record was made)."""


def parse_trackers(text: str | None, *, tracker_dir: Path | None = None) -> tuple[str, ...]:
    """`--tracker` as a tuple of known names (none: empty), each installed; UserError otherwise,
    and for a `--tracker-dir` given without a tracker (it would be ignored)."""
    names: list[str] = []
    for raw in (text or "").split(","):
        name = raw.strip().lower()
        if not name or name == "none" or name in names:
            continue
        if name not in PACKAGES:
            raise UserError(
                f"--tracker {name!r}: expected a comma list of {', '.join(TRACKERS)} (or none)"
            )
        names.append(name)
    if tracker_dir is not None and not names:
        raise UserError(
            "--tracker-dir says where trackers write: add --tracker tensorboard (or wandb, mlflow)"
        )
    require_trackers(names)
    return tuple(names)


def require_trackers(names: tuple[str, ...] | list[str]) -> None:
    """UserError with the pip line when a tracker's package is not installed."""
    for name in names:
        if name not in PACKAGES:
            raise UserError(f"unknown tracker {name!r}: expected one of {', '.join(TRACKERS)}")
        if not _installed(PACKAGES[name]):
            raise UserError(
                f"--tracker {name} needs the {PACKAGES[name]} package: "
                f"pip install 'medpeft-bench[{name}]'"
            )


def _installed(module: str) -> bool:
    if module in sys.modules:  # a module already imported (None marks a blocked import)
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def make_tracker(name: str, folder: Path) -> Tracker:
    """The tracker called `name`, writing local files under `folder` (the --tracker-dir); its
    package is imported by its `start`, so only a cell that runs loads it."""
    if name == "tensorboard":
        from bench.trackers.tensorboard_writer import TensorBoardTracker

        return TensorBoardTracker(folder)
    if name == "wandb":
        from bench.trackers.wandb_run import WandbTracker

        return WandbTracker(folder)
    if name == "mlflow":
        from bench.trackers.mlflow_run import MlflowTracker

        return MlflowTracker(folder)
    raise UserError(f"unknown tracker {name!r}: expected one of {', '.join(TRACKERS)}")
