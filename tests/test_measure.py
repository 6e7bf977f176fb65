"""CPU tests for bench.measure: parameter counts, peak memory, step timing, environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn

import bench
from bench.measure import (
    PeakMemory,
    StepMemory,
    StepTimer,
    Stopwatch,
    count_params,
    environment,
    gpu_busy_processes,
    nvml,
    param_report,
    timing,
)

MB = 2**20

# --------------------------------------------------------------------------- count_params


def test_count_params_linear_and_stack() -> None:
    # Linear(10, 3): 10*3 weights + 3 biases = 33
    assert count_params(nn.Linear(10, 3)) == 33
    # + Linear(3, 2): 3*2 + 2 = 8 -> 41 ; ReLU has none
    assert count_params(nn.Sequential(nn.Linear(10, 3), nn.ReLU(), nn.Linear(3, 2))) == 41


def test_count_params_shared_parameter_counted_once() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied: one 4x4 Parameter registered under two modules
    model = nn.Sequential(a, b)
    # a.weight 16 + a.bias 4 + b.bias 4 = 24 (40 if the tied weight were counted twice)
    assert count_params(model) == 24
    a.bias.requires_grad_(False)
    # trainable: shared weight 16 + b.bias 4 = 20
    assert count_params(model, trainable_only=True) == 20


def test_count_params_trainable_only() -> None:
    m = nn.Sequential(nn.Linear(10, 3), nn.Linear(3, 2))
    m[0].requires_grad_(False)
    assert count_params(m, trainable_only=True) == 8
    assert count_params(m) == 41


# --------------------------------------------------------------------------- param_report


def _frozen_test_vit() -> tuple[nn.Module, nn.Module, int, int]:
    model = timm.create_model("test_vit", pretrained=False, num_classes=7)
    head = model.get_classifier()
    head_params = sum(p.numel() for p in head.parameters())
    backbone_params = sum(p.numel() for p in model.parameters()) - head_params
    model.requires_grad_(False)
    head.requires_grad_(True)
    return model, head, backbone_params, head_params


def test_param_report_linear_probe_on_test_vit() -> None:
    model, head, backbone, head_params = _frozen_test_vit()
    # test_vit has embed_dim 64: head = 64*7 weights + 7 biases = 455
    assert head_params == 64 * 7 + 7 == 455
    r = param_report(backbone, head_params, model, head)
    assert r["trainable_params"] == r["head_params"] == 455
    assert r["trainable_params_no_head"] == 0
    assert r["backbone_params"] == backbone
    assert r["total_params"] == backbone + 455
    assert r["trainable_pct"] == pytest.approx(100 * 455 / backbone)
    assert r["trainable_pct_no_head"] == 0.0
    assert 0.1 < r["trainable_pct"] < 1.0  # ~0.15 % for test_vit's ~306k backbone


def test_param_report_counts_added_and_unfrozen_params_outside_head() -> None:
    model, head, backbone, head_params = _frozen_test_vit()
    model.norm.requires_grad_(True)  # final LayerNorm(64): 64 + 64 = 128
    model.extra = nn.Parameter(torch.zeros(10))  # a parameter a PEFT method might add
    r = param_report(backbone, head_params, model, head)
    assert r["total_params"] == backbone + 455 + 10
    assert r["trainable_params"] == 455 + 128 + 10
    assert r["trainable_params_no_head"] == 138
    assert r["trainable_pct_no_head"] == pytest.approx(100 * 138 / backbone)
    # without a head module everything trainable counts as "no head"
    r2 = param_report(backbone, head_params, model, None)
    assert r2["trainable_params_no_head"] == r2["trainable_params"] == 593


def test_param_report_rejects_empty_backbone() -> None:
    with pytest.raises(ValueError, match="backbone_params"):
        param_report(0, 33, nn.Linear(10, 3), None)


# --------------------------------------------------------------------------- PeakMemory


def _fresh(code: str) -> None:
    """Run `code` in a new interpreter. Peak RSS depends on what the process allocated and freed
    before (allocator and kernel state left by earlier tests), so these checks start clean; exit
    code 3 means the kernel cannot reset the peak here."""
    prelude = textwrap.dedent(
        """
        import sys
        import torch
        from bench import measure
        from bench.measure import PeakMemory
        MB = 2**20
        def touched(mb):  # torch.ones writes every page: resident, not just reserved
            return torch.ones(mb * MB // 4, dtype=torch.float32)
        def need_reset(pm):
            if pm.result["memory_source"] != "VmHWM (reset per phase)":
                sys.exit(3)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True
    )
    if proc.returncode == 3:
        pytest.skip("peak RSS cannot be reset here")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_peak_memory_cpu_sees_allocation_inside_phase() -> None:
    _fresh(
        """
        with PeakMemory("cpu") as pm:
            x = touched(200)
            del x
        r = pm.result
        assert r["device"] == "cpu" and r["memory_source"], r
        assert r["peak_rss_mb"] >= r["rss_start_mb"] + 150, r
        """
    )


def test_peak_memory_cpu_resets_between_phases() -> None:
    _fresh(
        """
        big = touched(500)
        del big  # freed (mmap'd, so returned to the OS) before the phase starts
        with PeakMemory("cpu") as pm:
            small = touched(50)
            del small
        need_reset(pm)
        r = pm.result
        # the earlier 500 MB spike must not leak into this phase's peak
        assert r["rss_start_mb"] + 40 <= r["peak_rss_mb"] < r["rss_start_mb"] + 150, r
        """
    )


def test_peak_memory_nested_phase_keeps_outer_peak() -> None:
    _fresh(
        """
        with PeakMemory("cpu") as outer:
            x = touched(300)
            del x
            with PeakMemory("cpu") as inner:  # resets the kernel's mark inside the outer phase
                y = touched(50)
                del y
        need_reset(outer)
        assert outer.result["peak_rss_mb"] >= outer.result["rss_start_mb"] + 250, outer.result
        assert inner.result["peak_rss_mb"] < inner.result["rss_start_mb"] + 150, inner.result
        """
    )


def test_peak_memory_falls_back_to_ru_maxrss() -> None:
    _fresh(
        """
        measure.memory._reset_hwm = lambda: False
        with PeakMemory("cpu") as pm:
            x = touched(100)
        r = pm.result
        assert r["memory_source"] == "ru_maxrss (process lifetime peak, not reset per phase)", r
        assert r["peak_rss_mb"] >= r["rss_start_mb"] > 0, r
        """
    )


def test_peak_memory_without_the_resource_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows has no `resource`: the peak working set stands in, or no figure at all
    import psutil

    from bench.measure import memory

    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    monkeypatch.setattr(memory, "_reset_hwm", lambda: False)
    info = SimpleNamespace(rss=2 * MB, peak_wset=300 * MB)
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: info))
    with PeakMemory("cpu", baseline_mb=1.0) as pm:
        pass
    assert pm.result["peak_rss_mb"] == 300.0
    assert pm.result["memory_source"] == "peak_wset (process lifetime peak, not reset per phase)"
    assert "own_mb" not in pm.result  # a lifetime peak is not a per-phase figure

    info = SimpleNamespace(rss=2 * MB)  # psutil off Windows has no peak_wset
    with PeakMemory("cpu") as pm:
        pass
    assert pm.result["peak_rss_mb"] is None
    assert pm.result["memory_source"].startswith("none")


def test_peak_memory_result_survives_exception() -> None:
    pm = PeakMemory("cpu")
    with pytest.raises(RuntimeError), pm:
        raise RuntimeError("boom")
    assert pm.result["peak_rss_mb"] > 0


def test_own_memory_leaves_out_what_an_earlier_run_freed() -> None:
    _fresh(
        """
        from bench.measure import memory_baseline
        # an earlier run: many small blocks, freed, which glibc keeps resident in its heap
        junk = [torch.ones(64 * 1024) for _ in range(2000)]  # 500 MB in 256 KiB blocks
        del junk
        baseline = memory_baseline("cpu")
        with PeakMemory("cpu", baseline_mb=baseline) as pm:
            x = touched(60)
            del x
        need_reset(pm)
        assert 55 <= pm.result["own_mb"] < 120, pm.result
        assert pm.result["own_definition"].startswith("the most memory the process held"), pm.result
        """
    )


def test_step_memory_counts_a_steps_tensors_like_an_allocator() -> None:
    _fresh(
        """
        from bench.measure import StepMemory, memory_baseline
        baseline = memory_baseline("cpu")
        kept = touched(40)  # held when the measured step starts: in the figure
        memory = StepMemory("cpu", baseline, at=1)
        for i in range(3):
            with memory.step(i):
                a = torch.ones(30 * MB // 4)  # the step's own: 30 MB + 30 MB at once
                b = a * 2
                kept.add_(1)  # in place: allocates nothing
                v = kept.view(-1, 4)  # a view: allocates nothing
                del a, b, v
        assert 40 + 60 <= memory.own_mb < 40 + 60 + 30, memory.own_mb
        phase = {"own_mb": 500.0}
        memory.apply(phase)
        assert phase["own_mb"] == memory.own_mb and phase["phase_own_mb"] == 500.0
        assert "steady step" in phase["own_definition"]
        """
    )


def test_step_memory_measures_nothing_on_a_gpu_or_without_the_step() -> None:
    on_gpu = StepMemory("cuda:0", 100.0)
    assert not on_gpu.host
    short = StepMemory("cpu", 100.0, at=1)
    with short.step(0):
        pass
    assert short.own_mb is None
    phase = {"own_mb": 7.0}
    short.apply(phase)
    assert phase == {"own_mb": 7.0}


# --------------------------------------------------------------------------- StepTimer


def test_step_timer_excludes_slow_warmup_steps() -> None:
    # 4 warm-up steps of 0.10 s then 3 steady steps of 0.01 s (batch 8). Including warm-up the
    # median would be 0.10 s and throughput 56 / 0.43 = 130 img/s; excluding it the median is
    # ~0.01 s and throughput 24 / 0.03 = 800 img/s (less if sleep overshoots on a busy box).
    timer = StepTimer("cpu", warmup=4)
    for duration in [0.10] * 4 + [0.01] * 3:
        with timer.step(8):
            time.sleep(duration)
    s = timer.summary()
    assert s["warmup_excluded"] is True
    assert s["warmup_steps"] == 4
    assert s["steps_timed"] == 3
    assert 0.009 <= s["step_time_median_s"] < 0.05
    assert 250 < s["throughput_img_s"] <= 8 / 0.01 + 1e-6


def test_step_timer_statistics_with_fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deterministic clock: each step reads the clock twice; durations are exact.
    durations = [100.0, 1.0, 2.0, 3.0, 4.0, 10.0]  # first is the single warm-up step
    sizes = [4, 4, 4, 4, 4, 2]
    ticks = []
    t = 0.0
    for d in durations:
        ticks += [t, t + d]
        t += d + 0.5
    clock = iter(ticks)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    timer = StepTimer("cpu", warmup=1)
    for bs in sizes:
        with timer.step(bs):
            pass
    s = timer.summary()
    # timed steps: [1, 2, 3, 4, 10] s with 4+4+4+4+2 = 18 images
    assert s["steps_timed"] == 5
    assert s["step_time_median_s"] == pytest.approx(3.0)
    # p90, linear interpolation: rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (10 - 4) = 7.6
    assert s["step_time_p90_s"] == pytest.approx(7.6)
    # total-based: 18 images / 20 s = 0.9 (median of per-step rates would be 4/3)
    assert s["throughput_img_s"] == pytest.approx(0.9)
    assert s["images_timed"] == 18
    assert s["time_timed_s"] == pytest.approx(20.0)


def test_step_timer_too_few_steps_times_everything() -> None:
    timer = StepTimer("cpu", warmup=5)
    empty = timer.summary()
    assert empty["steps_timed"] == 0
    assert empty["step_time_median_s"] is None and empty["throughput_img_s"] is None
    for _ in range(2):
        with timer.step(4):
            time.sleep(0.005)
    s = timer.summary()
    assert s["warmup_excluded"] is False
    assert s["warmup_steps"] == 0
    assert s["steps_timed"] == 2
    assert s["step_time_median_s"] >= 0.004


def test_step_timer_failed_step_not_recorded() -> None:
    timer = StepTimer("cpu", warmup=0)
    with pytest.raises(ValueError), timer.step(4):
        raise ValueError("diverged")
    assert timer.summary()["steps_timed"] == 0


# --------------------------------------------------------------------------- Stopwatch


def test_stopwatch_accumulates_phases_and_records_failures() -> None:
    sw = Stopwatch("cpu")
    with sw.phase("train"):
        time.sleep(0.03)
    with sw.phase("train"):
        time.sleep(0.03)
    with pytest.raises(RuntimeError), sw.phase("eval"):
        time.sleep(0.02)
        raise RuntimeError("oom")
    assert set(sw.seconds) == {"train", "eval"}
    assert 0.055 <= sw.seconds["train"] < 0.5
    assert 0.018 <= sw.seconds["eval"] < 0.5


# --------------------------------------------------------------------------- environment

ENV_KEYS = {
    "python_version",
    "platform",
    "hostname",
    "cpu_count",
    "torch_version",
    "timm_version",
    "peft_version",
    "numpy_version",
    "sklearn_version",
    "torch_cuda_version",
    "cudnn_version",
    "device_names",
    "torch_num_threads",
    "git_sha",
    "git_dirty",
    "medpeft_bench_version",
}


def test_environment_outside_git(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stop git from discovering a repository above tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = environment(repo=tmp_path)
    assert set(env) >= ENV_KEYS
    assert env["git_sha"] is None and env["git_dirty"] is None
    assert env["medpeft_bench_version"] == bench.__version__
    assert torch.__version__.startswith(env["torch_version"])
    assert env["timm_version"] == timm.__version__
    assert env["torch_num_threads"] == torch.get_num_threads()
    assert isinstance(env["device_names"], list) and env["device_names"]
    assert env["cpu_count"] >= 1


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_environment_in_git_repo(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("x")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    clean = environment(repo=tmp_path)
    assert len(clean["git_sha"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "a.txt").write_text("changed")
    assert environment(repo=tmp_path)["git_dirty"] is True


# --------------------------------------------------------------------------- no GPU / no NVML


def test_gpu_busy_processes_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    monkeypatch.setattr(nvml, "_nvml_tried", False)
    monkeypatch.setattr(nvml, "_nvml_module", None)
    assert gpu_busy_processes(0) is None


@pytest.mark.slow
def test_import_needs_neither_gpu_nor_pynvml() -> None:
    code = (
        "import sys; sys.modules['pynvml'] = None\n"
        "from bench import measure\n"
        "assert measure.gpu_busy_processes() is None\n"
        "with measure.PeakMemory('cpu') as pm: pass\n"
        "assert pm.result['device'] == 'cpu'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        cwd=str(Path(bench.__file__).resolve().parent.parent),  # so `bench` imports uninstalled
    )
    assert proc.returncode == 0, proc.stderr


def test_gpu_energy_is_the_counter_difference_in_joules(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([1_000_000, 1_250_500])  # millijoules since the driver loaded
    fake = SimpleNamespace(nvmlDeviceGetTotalEnergyConsumption=lambda handle: next(readings))
    monkeypatch.setattr(nvml, "_nvml_and_handle", lambda index: (fake, "gpu0"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    with nvml.GpuEnergy(torch.device("cuda", 0)) as energy:
        pass
    assert energy.joules == pytest.approx(250.5)
    with nvml.GpuEnergy(torch.device("cpu")) as off_gpu:
        pass
    assert off_gpu.joules is None


def test_gpu_energy_without_the_counter_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    fake = SimpleNamespace(nvmlDeviceGetTotalEnergyConsumption=unsupported)
    monkeypatch.setattr(nvml, "_nvml_and_handle", lambda index: (fake, "gpu0"))
    with nvml.GpuEnergy(torch.device("cuda", 0)) as energy:
        pass
    assert energy.joules is None
