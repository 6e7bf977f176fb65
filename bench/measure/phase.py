"""One measured phase of a run (training, testing, a profile's rounds): every cost the suite
takes over a phase, taken the same way by `bench run` and `bench profile`."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import torch

from bench.measure.load import MachineLoad
from bench.measure.memory import PeakMemory, StepMemory
from bench.measure.nvml import GpuEnergy
from bench.measure.timing import StepTimer


class Phase:
    """``with Phase(device, baseline_mb) as phase: loop(timer=phase.timer, memory=phase.steps)``,
    then ``phase.memory`` (`PeakMemory.result`, its `own_mb` from the measured step where there
    was one), ``phase.joules`` (GPU energy, or None) and, with ``load=True``, ``phase.conditions``
    (`MachineLoad.result`). ``step_at`` is the step `StepMemory` measures on the host (None: no
    step is measured, as for a compiled forward, which the op counter would make recompile)."""

    def __init__(
        self,
        device: torch.device,
        baseline_mb: float | None,
        *,
        step_at: int | None = 1,
        load: bool = False,
        warmup: int = 5,
    ) -> None:
        self.timer = StepTimer(device, warmup=warmup)
        measured = baseline_mb if step_at is not None else None
        self.steps = StepMemory(device, measured, at=step_at or 0)
        self._peak = PeakMemory(device, baseline_mb=baseline_mb)
        self._energy = GpuEnergy(device)
        self._load = MachineLoad(device) if load else None
        self._stack = contextlib.ExitStack()
        self.memory: dict[str, Any] = {}
        self.joules: float | None = None
        self.conditions: dict[str, Any] | None = None

    def __enter__(self) -> Phase:
        for meter in (self._peak, self._energy, self._load):
            if meter is not None:
                self._stack.enter_context(meter)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)
        self.memory = self._peak.result
        self.steps.apply(self.memory)
        self.joules = self._energy.joules
        self.conditions = self._load.result if self._load is not None else None
