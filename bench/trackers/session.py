"""A grid's trackers while its cells run: each cell a tracker run fed from the training loop's
callbacks, ended with the record's final figures and status. The JSON record stays the source
of truth: a tracker that raises is warned about once and left out for the rest of the grid."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.trackers.registry import Tracker, make_tracker, require_trackers

# summary name -> where the record keeps it: the costs a reader compares between runs
SUMMARY_PATHS: dict[str, tuple[str, ...]] = {
    "cost/wall_s": ("cost", "wall_s"),
    "cost/train_img_per_s": ("cost", "train_step", "throughput_img_s"),
    "cost/eval_img_per_s": ("cost", "eval_step", "throughput_img_s"),
    "cost/train_memory_mb": ("cost", "memory", "train", "own_mb"),
    "cost/inference_gflops": ("cost", "flops", "inference_gflops"),
    "cost/latency_b1_ms": ("cost", "latency_b1", "median_ms"),
    "cost/train_j": ("cost", "energy", "train_j"),
    "params/trainable": ("params", "trainable_params"),
    "params/trainable_pct": ("params", "trainable_pct"),
    "training/best_epoch": ("training", "best_epoch"),
}


class TrackerWarning(UserWarning):
    """A tracker failed during a grid and was left out; the records are unaffected."""


class Trackers:
    """The trackers a grid asked for (`--tracker`), writing local files under `folder`. Missing
    packages raise UserError here, before any cell runs; nothing is imported until a cell starts."""

    def __init__(self, names: Sequence[str], folder: Path) -> None:
        require_trackers(list(names))
        self._live: list[Tracker] = [make_tracker(name, folder) for name in names]

    def __bool__(self) -> bool:
        return bool(self._live)

    @contextlib.contextmanager
    def cell(self, run_id: str, config: dict[str, Any]) -> Iterator[CellTracking]:
        """Track one cell; leaving without `CellTracking.end` (Ctrl-C) ends its runs as
        `interrupted`."""
        tracking = CellTracking(self, run_id, config)
        try:
            yield tracking
        finally:
            if not tracking.ended:
                tracking.finish("interrupted", {})

    def each(self, method: str, *args: Any) -> None:
        """tracker.method(*args) for every tracker still in use; one that raises is warned
        about once and left out from then on."""
        for tracker in list(self._live):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # any tracker error (network, login, disk): the cell goes on
                self._live.remove(tracker)
                warnings.warn(
                    f"tracker {tracker.name} failed ({type(exc).__name__}: {exc}); the rest of "
                    "this grid runs without it, and the JSON records are unaffected",
                    TrackerWarning,
                    stacklevel=2,
                )


class CellTracking:
    """One cell's tracker runs. Steps count every optimizer step of the cell, so an `--oom-retry`
    attempt continues the curve instead of restarting it (W&B refuses steps that go back)."""

    def __init__(self, trackers: Trackers, run_id: str, config: dict[str, Any]) -> None:
        self.trackers = trackers
        self.steps = 0
        self.ended = False
        trackers.each("start", run_id, config)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def step(self, loss: float, epoch: int) -> None:
        """The training loop's step callback: the batch's loss."""
        self.steps += 1
        self.trackers.each("log", {"train/loss": loss, "train/epoch": epoch}, self.steps)

    def epoch(self, entry: dict[str, Any]) -> None:
        """The training loop's epoch callback: its `training.history` entry (mean train loss,
        validation metrics) and the learning rate the schedule reached."""
        metrics = {"train/epoch_loss": entry["train_loss"], "train/lr": entry.get("lr")}
        metrics |= {f"val/{k}": v for k, v in entry["val"].items()}
        self.trackers.each("log", _numbers(metrics), self.steps)

    def end(self, record: dict[str, Any]) -> None:
        """The record's test metrics and costs, then its status."""
        self.finish(str(record.get("status")), summary_of(record))

    def finish(self, status: str, summary: dict[str, float]) -> None:
        self.ended = True
        self.trackers.each("finish", status, summary, self.steps)


def summary_of(record: dict[str, Any]) -> dict[str, float]:
    """A record's final figures as flat scalars: test metrics (`test/auc`), the selected epoch's
    validation metrics (`best_val/auc`) and the costs of SUMMARY_PATHS."""
    metrics = record.get("metrics") or {}
    out: dict[str, Any] = {f"test/{k}": v for k, v in (metrics.get("test") or {}).items()}
    out |= {f"best_val/{k}": v for k, v in (metrics.get("val") or {}).items()}
    for name, path in SUMMARY_PATHS.items():
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out[name] = value
    return _numbers(out)


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The entries that are numbers (None: undefined or not measured here), as floats."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
