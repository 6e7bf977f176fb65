"""Cost measurement: parameter counts, per-phase peak memory, step timing and run environment."""

from bench.measure.env import environment
from bench.measure.memory import PeakMemory
from bench.measure.nvml import gpu_busy_processes
from bench.measure.params import count_params, param_report
from bench.measure.timing import StepTimer, Stopwatch

__all__ = [
    "PeakMemory",
    "StepTimer",
    "Stopwatch",
    "count_params",
    "environment",
    "gpu_busy_processes",
    "param_report",
]
