"""bench.measure.MachineLoad: other processes' CPU share over a window, the busy neighbours by
pid, the contention verdict, degrading without psutil or NVML, and the record's types for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.measure import MachineLoad, load, nvml
from bench.record import SCHEMA, Record, UnreadableRecord

SPIN = [sys.executable, "-c", "while True: pass"]


def spin_elsewhere() -> int:
    """Start a CPU-bound process that is not ours: its shell parent exits at once, so it is no
    descendant of this process (descendants count as the run's own work)."""
    shell = subprocess.run(
        ["sh", "-c", f'"{SPIN[0]}" -c "{SPIN[2]}" >/dev/null 2>&1 & echo $!'],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shell.stdout)


def test_a_busy_neighbour_is_measured_and_named_but_our_children_are_not() -> None:
    other = spin_elsewhere()
    child = subprocess.Popen(SPIN)
    try:
        time.sleep(0.2)  # both interpreters started and spinning
        with MachineLoad("cpu") as window:
            time.sleep(1.5)
    finally:
        os.kill(other, signal.SIGKILL)
        child.kill()
        child.wait()
    r = window.result
    json.dumps(r)  # what a record stores
    pids = [p["pid"] for p in r["busy_processes"]]
    assert other in pids, r["busy_processes"]
    assert child.pid not in pids and os.getpid() not in pids
    assert r["others_cpu_share"] > 0.2
    assert r["contended"] is True
    assert "% of the CPUs" in r["contention_reason"]
    assert r["cpu_count"] == os.cpu_count() and r["torch_threads"] >= 1
    assert r["gpu_other_processes"] is None  # a CPU window


def test_the_share_is_others_busy_time_over_the_cpu_time_there_was(monkeypatch) -> None:
    """Fake counters: the machine was busy 3 of 4 CPU seconds, 1 of them this process's."""
    system = iter([(10.0, 100.0), (13.0, 104.0)])
    own = iter([5.0, 6.0])
    # 4_000_001 spins, 4_000_002 is a reused pid (its time went down), 4_000_003 idles
    procs = iter([{4_000_001: 1.0, 4_000_002: 9.0, 4_000_003: 2.0},
                  {4_000_001: 1.2, 4_000_002: 0.1, 4_000_003: 2.0}])  # fmt: skip
    monkeypatch.setattr(load, "_system_times", lambda: next(system))
    monkeypatch.setattr(load, "_own_times", lambda: next(own))
    monkeypatch.setattr(load, "_process_times", lambda: next(procs))
    with MachineLoad("cpu") as window:
        time.sleep(load.MIN_WINDOW_S + 0.05)
    r = window.result
    assert r["others_cpu_share"] == pytest.approx(0.5)
    shares = {p["pid"]: p["core_share"] for p in r["busy_processes"]}
    wall = r["wall_s"]
    assert shares[4_000_001] == pytest.approx(0.2 / wall)
    assert shares[4_000_002] == pytest.approx(0.1 / wall)
    assert 4_000_003 not in shares
    assert r["contended"] is True and r["contention_reason"] == (
        "other processes used 50 % of the CPUs"
    )


def test_a_window_too_short_for_the_tick_counters_falls_back_to_the_load_average() -> None:
    with MachineLoad("cpu") as window:
        pass
    r = window.result
    assert r["others_cpu_share"] is None and r["busy_processes"] is None
    assert isinstance(r["contended"], bool)  # by the load average rule


@pytest.mark.parametrize(
    ("share", "load_end", "threads", "gpu", "verdict"),
    [
        (0.30, 0.5, 1, None, (True, "other processes used 30 % of the CPUs")),
        (0.10, 9.0, 1, None, (False, None)),  # the exact share wins over the load average
        (None, 3.1, 1, None, (True, "load average 3.1 on 2 CPUs")),
        (None, 1.9, 1, None, (False, None)),  # 0.9 runnable beyond ours, under 0.5 x 2 CPUs
        (0.0, 0.0, 1, 2, (True, "2 other processes on the GPU")),
        (0.4, 0.0, 1, 1, (True, "other processes used 40 % of the CPUs; 1 other process on "
                                "the GPU")),
        (None, None, 1, None, (None, None)),  # nothing could be measured
    ],
)  # fmt: skip
def test_verdict(share, load_end, threads, gpu, verdict) -> None:
    r = {"others_cpu_share": share, "loadavg_end": load_end, "cpu_count": 2,
         "torch_threads": threads, "gpu_other_count": gpu}  # fmt: skip
    assert load._verdict(r) == verdict


def test_without_psutil_or_nvml_every_figure_degrades_to_none(monkeypatch) -> None:
    monkeypatch.setattr(load, "psutil", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    monkeypatch.setattr(nvml, "_nvml_tried", False)
    monkeypatch.setattr(nvml, "_nvml_module", None)
    with MachineLoad("cpu") as window:
        time.sleep(load.MIN_WINDOW_S)
    r = window.result
    assert r["others_cpu_share"] is None and r["busy_processes"] is None
    assert r["cpu_freq_mhz"] is None
    assert nvml.gpu_activity(0) is None


@pytest.mark.parametrize(
    ("own_pid_listed", "at_exit", "others"),
    [
        (True, [{"pid": 9, "used_mb": 600.0}], 1),  # NVML names this process by its own pid
        # in a container NVML lists this process by its host pid: not someone else
        (False, [{"pid": 4242, "used_mb": 600.0}], 0),
        (False, [{"pid": 4242, "used_mb": 600.0}, {"pid": 9, "used_mb": 700.0}], 1),
    ],
)
def test_other_processes_on_the_gpu(monkeypatch, own_pid_listed, at_exit, others) -> None:
    """NVML faked as it answered on an H200: utilisation, SM clocks and the processes."""
    lists = iter([[], at_exit])
    monkeypatch.setattr(load, "gpu_busy_processes", lambda index: next(lists))
    activity = {"utilization_pct": 97.0, "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980,
                "own_pid_listed": own_pid_listed}  # fmt: skip
    monkeypatch.setattr(load, "gpu_activity", lambda index: activity)
    monkeypatch.setattr(load.torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(load.torch.cuda, "memory_reserved", lambda index: 2**26)
    with MachineLoad("cuda:0") as window:
        pass
    r = window.result
    assert r["gpu_other_processes"] == at_exit and r["gpu_other_count"] == others
    assert (r["gpu_utilization_pct"], r["gpu_sm_clock_mhz"]) == (97.0, 1980)
    assert ("1 other process on the GPU" in (r["contention_reason"] or "")) is bool(others)


def test_a_failing_window_still_has_its_result() -> None:
    with pytest.raises(RuntimeError), MachineLoad("cpu") as window:
        raise RuntimeError("the step failed")
    assert "contended" in window.result


def _cell(conditions: object) -> dict:
    return {"schema": SCHEMA, "run_id": "r", "status": "ok",
            "config": {"method": "m", "dataset": "d", "seed": 0, "backbone": "b"},
            "cost": {"conditions": conditions}}  # fmt: skip


def test_records_carry_the_conditions_and_their_types_are_checked() -> None:
    with MachineLoad("cpu") as window:
        time.sleep(load.MIN_WINDOW_S)
    cell = json.loads(json.dumps(_cell(window.result)))
    assert Record.from_json(cell).to_json() == cell
    profile = {"schema": SCHEMA, "kind": "profile", "run_id": "p", "status": "ok",
               "profile": {"method": "lora", "conditions": window.result}}  # fmt: skip
    assert Record.from_json(profile).to_json() == profile
    with pytest.raises(UnreadableRecord, match=r"cost.conditions.contended is str"):
        Record.from_json(_cell({**window.result, "contended": "yes"}))
    with pytest.raises(UnreadableRecord, match=r"profile.conditions.torch_threads"):
        Record.from_json({**profile, "profile": {"method": "lora",
                                                 "conditions": {"torch_threads": 1.5}}})  # fmt: skip


@pytest.mark.slow
def test_a_grid_run_under_load_is_flagged_in_the_report(tmp_path, tiny_data_root) -> None:
    """The user's case: a grid ran while another job loaded the CPU; its record says so and the
    report's tables mark the row and warn that its timing is not comparable."""
    from typer.testing import CliRunner

    from bench.cli import app
    from tests.conftest import grid_args

    results = tmp_path / "results"
    others = [spin_elsewhere() for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        res = CliRunner().invoke(app, grid_args(tiny_data_root, results, "--methods", "linear",
                                                "--epochs", "2"))  # fmt: skip
    finally:
        for pid in others:
            os.kill(pid, signal.SIGKILL)
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(p.read_text()) for p in results.rglob("*.json")
                 if p.name != "grid.json"]  # fmt: skip
    conditions = record["cost"]["conditions"]
    assert conditions["contended"] is True, conditions
    report = CliRunner().invoke(app, ["report", "--results", str(results), "--out",
                                      str(tmp_path / "reports")])  # fmt: skip
    assert report.exit_code == 0, report.output
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "†" in summary and "other processes used" in summary, summary
