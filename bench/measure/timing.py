"""Wall-clock time per step (StepTimer) and per named phase (Stopwatch), device-synchronised."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from bench.measure.device import as_device, sync, sync_quietly

logger = logging.getLogger(__name__)


class StepTimer:
    """Wall-clock time per training/inference step, with the first ``warmup`` steps excluded.

    ``with timer.step(batch_size): ...`` times one step. On CUDA the device is synchronised
    before and after the step, so the time is the step's full wall time (host work, copies and
    kernels); the harness's steps already end in a host sync (``loss.item()``, ``.cpu()``), so
    this adds no stall of its own. A step that raises is not recorded.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu", warmup: int = 5) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.device = as_device(device)
        self.warmup = warmup
        self._times: list[float] = []
        self._sizes: list[int] = []

    @contextlib.contextmanager
    def step(self, batch_size: int) -> Iterator[None]:
        sync(self.device)
        t0 = time.perf_counter()
        yield
        sync(self.device)
        self._times.append(time.perf_counter() - t0)
        self._sizes.append(int(batch_size))

    def first_step_excess_s(self) -> float:
        """How much longer the first step took than the median of the others (0 with fewer than
        two steps): one-off work such as `torch.compile`'s compilation."""
        if len(self._times) < 2:
            return 0.0
        return max(0.0, self._times[0] - float(np.median(self._times[1:])))

    def summary(self) -> dict[str, Any]:
        """Timing statistics over the steps after warm-up.

        ``throughput_img_s`` is total images / total seconds over the timed steps (not the
        median of per-step rates), so a ragged last batch is weighted by its size.
        ``step_time_p90_s`` uses linear interpolation (numpy default). When there are no more
        steps than ``warmup``, all steps are timed and ``warmup_excluded`` is False.
        """
        n = len(self._times)
        excluded = n > self.warmup
        start = self.warmup if excluded else 0
        times = np.asarray(self._times[start:], dtype=np.float64)
        images = int(sum(self._sizes[start:]))
        out: dict[str, Any] = {
            "steps_total": n,
            "images_total": int(sum(self._sizes)),
            "steps_timed": int(times.size),
            "warmup_steps": start,
            "warmup_excluded": excluded,
            "images_timed": images,
            "time_timed_s": None,
            "step_time_median_s": None,
            "step_time_p90_s": None,
            "throughput_img_s": None,
        }
        if times.size == 0:
            return out
        if not excluded and self.warmup > 0:
            logger.warning(
                "only %d steps timed (warm-up %d): timing includes warm-up steps", n, self.warmup
            )
        total = float(times.sum())
        out.update(
            time_timed_s=total,
            step_time_median_s=float(np.median(times)),
            step_time_p90_s=float(np.percentile(times, 90)),
            throughput_img_s=images / total if total > 0 else None,
        )
        return out


class Stopwatch:
    """Wall-clock seconds per named phase: ``with sw.phase("train"): ...`` then ``sw.seconds``.

    Re-entering a phase name adds to its total. A phase that raises is still recorded.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu") -> None:
        self.device = as_device(device)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        sync(self.device)
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            # Pending kernels belong to this phase; synchronise before reading the clock.
            if ok:
                sync(self.device)
            else:
                sync_quietly(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + (time.perf_counter() - t0)
