"""Cost measurement: parameter counts, FLOPs, per-phase peak memory, step timing, batch-1 latency
and run environment."""

from bench.measure.env import environment
from bench.measure.flops import flops_per_image
from bench.measure.latency import batch1_latency
from bench.measure.memory import PeakMemory
from bench.measure.nvml import gpu_busy_processes
from bench.measure.params import count_params, param_report
from bench.measure.timing import StepTimer, Stopwatch

__all__ = [
    "PeakMemory",
    "StepTimer",
    "Stopwatch",
    "batch1_latency",
    "count_params",
    "environment",
    "flops_per_image",
    "gpu_busy_processes",
    "param_report",
]
