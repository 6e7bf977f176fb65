"""Cost measurement: parameter counts, per-phase peak memory, GPU energy, step timing, run
environment and the machine's load while a cost was measured."""

from bench.measure.env import environment
from bench.measure.load import MachineLoad
from bench.measure.memory import (
    MEMORY_LABEL,
    PeakMemory,
    StepMemory,
    memory_baseline,
    memory_definition,
)
from bench.measure.nvml import GpuEnergy, gpu_busy_processes
from bench.measure.params import count_params, param_report
from bench.measure.timing import StepTimer, Stopwatch

__all__ = [
    "MEMORY_LABEL",
    "GpuEnergy",
    "MachineLoad",
    "PeakMemory",
    "StepMemory",
    "StepTimer",
    "Stopwatch",
    "count_params",
    "environment",
    "gpu_busy_processes",
    "memory_baseline",
    "memory_definition",
    "param_report",
]
