"""Cost measurement: parameter counts, FLOPs, per-phase peak memory, GPU energy, step timing,
batch-1 latency, run environment and the machine's load while a cost was measured."""

from bench.measure.env import environment
from bench.measure.flops import flops_per_image
from bench.measure.latency import batch1_latency
from bench.measure.load import MachineLoad
from bench.measure.memory import (
    PeakMemory,
    StepMemory,
    memory_baseline,
    memory_definition,
)
from bench.measure.nvml import GpuEnergy, gpu_busy_processes
from bench.measure.params import count_params, param_report
from bench.measure.phase import Phase
from bench.measure.timing import StepTimer, Stopwatch

__all__ = [
    "GpuEnergy",
    "MachineLoad",
    "PeakMemory",
    "Phase",
    "StepMemory",
    "StepTimer",
    "Stopwatch",
    "batch1_latency",
    "count_params",
    "environment",
    "flops_per_image",
    "gpu_busy_processes",
    "memory_baseline",
    "memory_definition",
    "param_report",
]
