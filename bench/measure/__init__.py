"""Cost measurement: parameter counts, per-phase peak memory, step timing, run environment and
the machine's load while a cost was measured."""

from bench.measure.env import environment
from bench.measure.load import MachineLoad
from bench.measure.memory import PeakMemory
from bench.measure.nvml import gpu_busy_processes
from bench.measure.params import count_params, param_report
from bench.measure.timing import StepTimer, Stopwatch

__all__ = [
    "MachineLoad",
    "PeakMemory",
    "StepTimer",
    "Stopwatch",
    "count_params",
    "environment",
    "gpu_busy_processes",
    "param_report",
]
