"""The cost part of a run's record (`record.cost`) as types: step timings, memory per phase,
energy, the machine's load while timing, FLOPs and latency (bench.measure)."""

from __future__ import annotations

from typing import TypedDict


class GpuProcess(TypedDict):
    """Another process on the cell's GPU (NVML)."""

    pid: int
    used_mb: float | None


class StepTiming(TypedDict):
    """bench.measure.StepTimer.summary."""

    steps_total: int
    steps_timed: int
    warmup_steps: int
    warmup_excluded: bool
    images_timed: int
    images_total: int
    time_timed_s: float | None
    step_time_median_s: float | None
    step_time_p90_s: float | None
    throughput_img_s: float | None


class PhaseMemory(TypedDict, total=False):
    """bench.measure.PeakMemory.result: CUDA keys on a GPU, RSS keys elsewhere."""

    device: str
    peak_allocated_mb: float
    peak_reserved_mb: float
    allocated_start_mb: float
    nvml_process_mb: float | None
    nvml_device_used_mb: float | None
    host_peak_rss_mb: float
    peak_rss_mb: float
    rss_start_mb: float | None
    memory_source: str
    own_mb: float  # the figure compared between methods: bench.measure.memory's docstring
    own_definition: str


class Energy(TypedDict, total=False):
    """What the GPU drew (NVML's energy counter), in joules; only on a GPU with the counter."""

    train_j: float | None
    eval_j: float | None
    train_j_per_image: float | None
    eval_j_per_image: float | None
    source: str


class BusyProcess(TypedDict):
    """Another process busy during a measured window."""

    pid: int
    name: str | None
    core_share: float  # its CPU time over the window's wall time: 1.0 = one core throughout


class Conditions(TypedDict):
    """bench.measure.MachineLoad.result: what else the machine did while the costs were timed
    (grid records: `cost.conditions`; profile records: `profile.conditions`)."""

    wall_s: float  # the window's length
    loadavg_start: float | None  # 1-minute load average; None off Unix
    loadavg_end: float | None
    cpu_count: int | None
    cpus_usable: int | None  # CPUs this process may run on (affinity)
    torch_threads: int
    torch_interop_threads: int
    others_cpu_share: float | None  # other processes' share of all CPUs' time, 0..1
    busy_processes: list[BusyProcess] | None  # the busiest others, from a tenth of a core
    cpu_freq_mhz: dict[str, float | None] | None  # current, min, max
    gpu_other_processes: list[GpuProcess] | None  # None off CUDA or without NVML
    gpu_other_count: int | None  # others on the GPU (this process not counted in a container)
    gpu_utilization_pct: float | None
    gpu_sm_clock_mhz: int | None
    gpu_sm_clock_max_mhz: int | None
    contended: bool | None  # None: nothing could be measured
    contention_reason: str | None  # why contended, in words


class Flops(TypedDict):
    """bench.measure.flops_per_image: GFLOPs per image, counted (not timed), so any machine's
    agree; None where the method has no such figure (no merge, no feature cache)."""

    img_size: int
    inference_gflops: float
    inference_fixed_gflops: float  # per forward, whatever the batch: B images cost B·per image + it
    train_gflops: float
    train_fixed_gflops: float  # likewise per training step
    train_counts: str  # what one training step's count covers
    feature_gflops: float | None  # the frozen part, once per image, when training from a cache
    merged_inference_gflops: float | None
    backbone_gflops: float | None
    inference_overhead_gflops: float | None  # (merged, else inference) - backbone


class Latency(TypedDict):
    """bench.measure.batch1_latency: one image through the whole model, in eval mode."""

    median_ms: float
    p90_ms: float
    repeats: int
    warmup: int


class Cost(TypedDict, total=False):
    train_step: StepTiming
    eval_step: StepTiming
    memory: dict[str, PhaseMemory]  # phase (preload, train, eval) -> peaks
    energy: Energy

    flops: Flops
    latency_b1: Latency
    compile_s: float  # with --compile: the first steps' excess over steady ones
    wall_s: float
    phases_s: dict[str, float]  # bench.measure.Stopwatch.seconds
    conditions: Conditions  # the machine's load while training was timed
