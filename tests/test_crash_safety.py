"""Crash safety: SIGKILL at random points then resume, runners sharing a results folder, claims
of dead and live runners, Ctrl-C once and twice, and retrying out-of-memory cells."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench import claims
from bench.cli import app
from bench.grid import GridRequest, plan
from bench.records import read_record, write_record
from tests.conftest import claim_files, dead_pid, subprocess_env, wait_for, write_claim

KILLS = 5  # SIGKILLs of a real grid at random points before it may finish
KILL_SEED = 8  # seeds where in the grid each kill lands
RACERS = 3  # runners started together on one folder
RACE_CELLS = 24

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def grid_args(data_root: Path, results: Path, *extra: str) -> list[str]:
    return [
        "run", "--methods", "linear", "--datasets", "pneumoniamnist", "--data-root", str(data_root),
        "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "1",
        "--batch-size", "16", "--results", str(results), "--no-progress", *extra,
    ]  # fmt: skip


def planned_ids(data_root: Path, results: Path, methods: list[str], seeds: list[int]) -> set[str]:
    req = GridRequest(methods=methods, datasets=["pneumoniamnist"], seeds=seeds, backbone="test_vit",
                     pretrained=False, img_size=32, epochs=1, batch_size=16, results=results,
                     data_root=data_root)  # fmt: skip
    return {c.run_id for c in plan(req, dry_run=True).cells}


def valid_records(results: Path) -> dict[str, str]:
    """File name -> text of every *.json; fails on any file that is not a whole record."""
    out = {}
    for path in sorted(results.glob("*.json")):
        rec = read_record(path)
        assert rec is not None, f"{path.name} is not a whole record: {path.read_text()[:200]!r}"
        assert path.name == f"{rec['run_id']}.json"
        out[path.name] = path.read_text()
    return out


def n_records(results: Path) -> int:
    try:
        return len(list(results.glob("*.json")))
    except FileNotFoundError:
        # a starting runner makes the folder to check it is writable and removes it again
        # until its first record: glob may meet it made and then gone
        return 0


def holds_claim(results: Path, pid: int) -> bool:
    """Whether process `pid` holds a claim (is running a cell)."""
    for path in claim_files(results):
        try:
            if json.loads(path.read_text()).get("pid") == pid:
                return True
        except (OSError, ValueError):
            pass  # released, or superseded, while we looked
    return False


# ----------------------------------------------------------------------------- kill and resume


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path, tiny_data_root) -> None:
    """A real grid in a subprocess, SIGKILLed KILLS times at random points (mid-cell, mid-write,
    between cells), rerun until it finishes: every cell ends with exactly one whole record, no
    record written before a kill is lost or changed, and no dead runner's claim blocks a rerun
    or is left behind."""
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "full,linear", "--seeds", "0-5")
    cmd = [sys.executable, "-m", "bench.cli", *args]
    expected = planned_ids(tiny_data_root, results, ["full", "linear"], list(range(6)))
    rng = random.Random(KILL_SEED)
    kept: dict[str, str] = {}  # every whole record seen so far: must survive every later kill
    kills = launches = left_claims = 0
    landed = []  # records on disk when each kill landed
    outputs = []
    while True:
        launches += 1
        assert launches <= KILLS + 3, "the grid does not finish"
        log = tmp_path / f"launch{launches}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env())
            if kills < KILLS:
                # a random point of this runner's grid: once 1-3 more records exist and it holds
                # a claim (a cell in progress), a random part of a cell's time later; never past
                # the last cells, so that the kill lands before the grid can finish
                target = min(len(kept) + rng.randint(1, 3), len(expected) - 3)
                delay = rng.uniform(0.0, 0.1)  # a tiny cell takes 0.05-0.2 s

                def ready(target=target, pid=proc.pid) -> bool:
                    return n_records(results) >= target and holds_claim(results, pid)

                if wait_for(ready, proc):
                    if len(expected) - n_records(results) > 4:
                        time.sleep(delay)
                    proc.kill()
                    landed.append(n_records(results))
            proc.wait(timeout=120)
        outputs.append(log.read_text())
        now = valid_records(results)
        lost = {name for name, text in kept.items() if now.get(name) != text}
        assert not lost, f"records lost or changed after launch {launches}: {lost}"
        kept = now
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, outputs[-1][-2000:]
            break
        kills += 1
        left_claims += len(claim_files(results))  # the killed runner's, for the next to take over
    assert kills == KILLS
    assert set(kept) == {f"{run_id}.json" for run_id in expected}
    assert all(json.loads(text)["status"] == "ok" for text in kept.values())
    # a temp file of a killed write may remain, but nothing that reads as a record
    leftovers = [p.name for p in results.iterdir() if p.name not in kept and p.name != ".claims"]
    assert all(not name.endswith(".json") for name in leftovers), leftovers
    assert claim_files(results) == []  # every dead runner's claim taken over, then released
    assert not any("running elsewhere" in text for text in outputs)
    print(
        f"\nkill-and-resume: {kills} kills (with {landed} records written), {launches} launches, "
        f"{len(expected)} cells, "
        f"{left_claims} dead runners' claims taken over, {len(leftovers)} temp file(s) left, "
        "records lost: 0"
    )


# ----------------------------------------------------------------- fake cells through run_grid

# A grid of instant fake cells through the real run_grid (no torch: starts in a blink), for the
# concurrency and Ctrl-C tests. argv: results log mode cells.
DRIVER = r"""
import json, os, signal, sys, time
from pathlib import Path

import bench.records
from bench.config import CellConfig
from bench.execute import run_grid
from bench.grid import GridRequest, Plan, data_key

results, log, mode, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def note(text):
    with open(log, "a") as f:  # O_APPEND: lines from several processes never interleave
        f.write(text + "\n")


def fake_run_cell(cell, data, source, *, on_step=None, on_preload=None):
    note(f"run {cell.run_id} {os.getpid()} {time.time()}")
    if mode in ("race", "fail"):
        time.sleep(0.01)
        note(f"end {cell.run_id} {os.getpid()} {time.time()}")
    elif mode == "sigint" and cell.seed == 1:
        time.sleep(60)  # the cell in progress when Ctrl-C comes
    elif mode == "hang":
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            note("caught")
            time.sleep(60)  # a cleanup that hangs: only the second Ctrl-C ends it
            raise
    failed = mode == "fail"
    return {"schema": 1, "run_id": cell.run_id, "status": "failed" if failed else "ok",
            "error": "RuntimeError: boom" if failed else None,
            "config": cell.to_dict(), "metrics": {"primary_metric": "auc", "primary": 0.5},
            "cost": {"wall_s": 0.0}, "pid": os.getpid()}


if mode == "defer":
    real_write = bench.records.write_record

    def slow_write(results, record):
        note(f"writing {record['run_id']}")
        time.sleep(1.0)  # Ctrl-C comes now: the record must still be written
        return real_write(results, record)

    bench.records.write_record = slow_write

cells = [CellConfig(method="fake", dataset="d", seed=s, backbone="b", pretrained=False,
                    weights=None, weights_sha256=None, epochs=1, batch_size=8, img_size=32,
                    device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                    weight_decay=0.0, warmup_epochs=0.0, grad_clip=0.0) for s in range(n)]
plan = Plan(cells=cells, datasets={data_key(c): None for c in cells}, source=None)
req = GridRequest(methods=["fake"], datasets=["d"], seeds=list(range(n)), backbone="b",
                 results=results)
before = signal.getsignal(signal.SIGINT)
note("ready")
out = run_grid(plan, req, run_cell=fake_run_cell)
print(json.dumps({"ran": out.ran, "skipped": out.skipped, "busy": out.busy,
                  "interrupted": out.interrupted,
                  "restored": signal.getsignal(signal.SIGINT) is before}))
sys.exit(130 if out.interrupted else 0)
"""


def fake_ids(n: int) -> list[str]:
    from bench.config import CellConfig

    return [
        CellConfig(method="fake", dataset="d", seed=s, backbone="b", pretrained=False,
                   weights=None, weights_sha256=None, epochs=1, batch_size=8, img_size=32,
                   device="cpu", precision="fp32", optimizer="adamw", lr=1e-3, weight_decay=0.0,
                   warmup_epochs=0.0, grad_clip=0.0).run_id
        for s in range(n)
    ]  # fmt: skip


def start_driver(tmp_path: Path, results: Path, mode: str, n: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    cmd = [sys.executable, str(script), str(results), str(tmp_path / "log.txt"), mode, str(n)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "log.txt"
    return path.read_text().splitlines() if path.exists() else []


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    return (json.loads(out.strip().splitlines()[-1]) if out.strip() else {}), err


def race(tmp_path: Path, mode: str) -> tuple[list[list[str]], list[dict], Path]:
    """RACERS runners started together on one folder, half of whose cells hold claims of a dead
    runner (so they also race to take those over); returns the cell runs logged ("run"/"end",
    run id, pid, time), the runners' outcomes and the folder."""
    results = tmp_path / "results"
    gone = dead_pid()
    for run_id in fake_ids(RACE_CELLS)[: RACE_CELLS // 2]:
        write_claim(results, run_id, pid=gone, process_start="1")
    procs = [start_driver(tmp_path, results, mode, RACE_CELLS) for _ in range(RACERS)]
    outcomes = [finish(p) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outcomes]
    for o, _ in outcomes:
        assert o["ran"] + o["skipped"] + o["busy"] == RACE_CELLS
    assert claim_files(results) == []
    print(f"\nrunners ({mode}): ran {[o['ran'] for o, _ in outcomes]}, "
          f"busy {[o['busy'] for o, _ in outcomes]}")  # fmt: skip
    lines = [line.split() for line in log_lines(tmp_path) if line.split()[0] in ("run", "end")]
    return lines, [o for o, _ in outcomes], results


@pytest.mark.slow
def test_runners_sharing_a_folder_never_run_a_cell_twice(tmp_path) -> None:
    """Every cell runs exactly once, in one runner, and has one record, from that runner."""
    lines, outcomes, results = race(tmp_path, "race")
    runs = [(run_id, int(pid)) for kind, run_id, pid, _ in lines if kind == "run"]
    assert Counter(run_id for run_id, _ in runs) == Counter(fake_ids(RACE_CELLS))
    records = {json.loads(t)["run_id"]: json.loads(t) for t in valid_records(results).values()}
    assert {r: rec["pid"] for r, rec in records.items()} == dict(runs)
    assert sum(o["ran"] for o in outcomes) == RACE_CELLS


@pytest.mark.slow
def test_runners_never_run_a_failed_cell_at_the_same_time(tmp_path) -> None:
    """A failed record is retried by a runner that finds it when it starts (failures are often
    environmental), but never by two runners at once: the runs of one cell do not overlap, and
    its record is its last run's."""
    lines, _, results = race(tmp_path, "fail")
    spans: dict[str, list[list[float]]] = {}
    for kind, run_id, _pid, at in lines:
        if kind == "run":
            spans.setdefault(run_id, []).append([float(at), float("inf")])
        else:
            spans[run_id][-1][1] = float(at)
    assert set(spans) == set(fake_ids(RACE_CELLS))
    for run_id, runs in spans.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start > end, f"{run_id} ran in two runners at once"
    last_pid = {run_id: int(pid) for kind, run_id, pid, _ in lines if kind == "run"}
    records = {json.loads(t)["run_id"]: json.loads(t) for t in valid_records(results).values()}
    assert {r: rec["pid"] for r, rec in records.items()} == last_pid
    assert all(rec["status"] == "failed" for rec in records.values())


@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]])
def test_first_ctrl_c_abandons_the_cell_in_progress(tmp_path, signals) -> None:
    """Ctrl-C, or SIGTERM (scancel, kill; a repeated one, as scancel and a launcher both send,
    is ignored), abandons the cell in progress and releases its claim."""
    results = tmp_path / "results"
    ids = fake_ids(3)
    proc = start_driver(tmp_path, results, "sigint", 3)
    wait_for(lambda: f"run {ids[1]}" in " ".join(log_lines(tmp_path)), proc, timeout=30)
    for signum in signals:
        proc.send_signal(signum)
    outcome, err = finish(proc)
    assert proc.returncode == 130, err
    assert outcome == {"ran": 1, "skipped": 0, "busy": 0, "interrupted": True, "restored": True}
    name = "Ctrl-C" if signals[0] == signal.SIGINT else "SIGTERM"
    assert f"{name}: stopping; finished cells are saved" in err
    assert set(valid_records(results)) == {f"{ids[0]}.json"}  # cell 1 abandoned, cell 2 never run
    assert claim_files(results) == []  # the abandoned cell's claim released
    assert not any(ids[2] in line for line in log_lines(tmp_path))


def test_record_written_between_stamp_and_read_is_not_run_again(tmp_path, monkeypatch) -> None:
    """Another runner writes a cell's record after this runner found the cell unfinished: the
    pass sees the new file when it claims the cell, and skips it instead of running it twice."""
    import bench.execute
    from bench.config import CellConfig
    from bench.execute import run_grid
    from bench.grid import GridRequest, Plan, data_key

    results = tmp_path / "results"
    cell = CellConfig(method="fake", dataset="d", seed=0, backbone="b", pretrained=False,
                      weights=None, weights_sha256=None, epochs=1, batch_size=8, img_size=32,
                      device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                      weight_decay=0.0, warmup_epochs=0.0, grad_clip=0.0)  # fmt: skip
    record = {"schema": 1, "run_id": cell.run_id, "status": "ok", "error": None,
              "config": cell.to_dict()}  # fmt: skip
    real_done = bench.execute.done_record

    def done_then_written(req, run_id):
        found = real_done(req, run_id)
        write_record(results, record)  # the other runner finishes right after this read
        return found

    monkeypatch.setattr(bench.execute, "done_record", done_then_written)
    plan_ = Plan(cells=[cell], datasets={data_key(cell): None}, source=None)
    req = GridRequest(methods=["fake"], datasets=["d"], seeds=[0], backbone="b", results=results)
    out = run_grid(plan_, req,
                   run_cell=lambda *a, **k: pytest.fail("the cell ran a second time"))  # fmt: skip
    assert (out.ran, out.skipped) == (0, 1) and out.records == [record]


@pytest.mark.slow
def test_first_ctrl_c_while_a_record_is_written_keeps_it(tmp_path) -> None:
    results = tmp_path / "results"
    ids = fake_ids(2)
    proc = start_driver(tmp_path, results, "defer", 2)
    wait_for(lambda: f"writing {ids[0]}" in log_lines(tmp_path), proc, timeout=30)
    proc.send_signal(signal.SIGINT)
    outcome, err = finish(proc)
    assert proc.returncode == 130, err
    assert outcome["interrupted"] and outcome["ran"] == 1
    assert set(valid_records(results)) == {f"{ids[0]}.json"}
    assert not any(ids[1] in line for line in log_lines(tmp_path))
    assert claim_files(results) == []


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_and_a_rerun_takes_over(tmp_path) -> None:
    results = tmp_path / "results"
    proc = start_driver(tmp_path, results, "hang", 2)
    wait_for(lambda: any(line.startswith("run ") for line in log_lines(tmp_path)), proc, 30)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "caught" in log_lines(tmp_path), proc, timeout=10)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, timeout=10)  # the hung cleanup would sleep 60 s
    assert proc.returncode == 130 and "stopped at once" in err
    assert list(results.glob("*.json")) == []
    assert len(claim_files(results)) == 1  # os._exit released nothing: a dead runner's claim
    rerun = start_driver(tmp_path, results, "race", 2)
    outcome, err = finish(rerun)
    assert rerun.returncode == 0, err
    assert outcome["ran"] == 2 and outcome["busy"] == 0
    assert claim_files(results) == []


# ------------------------------------------------------------------------------------- claims


def test_live_claim_is_respected_and_a_dead_one_taken_over(tmp_path, tiny_data_root) -> None:
    """`bench run` skips a cell a live runner holds (reported "running elsewhere", its claim
    untouched) and takes over one whose runner is dead."""
    results = tmp_path / "results"
    (run_id,) = planned_ids(tiny_data_root, results, ["linear"], [0])
    holder = subprocess.Popen(["sleep", "60"])
    try:
        claim = write_claim(
            results, run_id, pid=holder.pid, process_start=claims.process_start(holder.pid)
        )
        before = claim.read_bytes()
        res = bench(*grid_args(tiny_data_root, results))
        assert res.exit_code == 0, res.output
        assert "0 cell(s) run, 0 already done (--force reruns them), 1 running elsewhere" in (
            res.output
        )
        assert list(results.glob("*.json")) == [] and claim.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    res = bench(*grid_args(tiny_data_root, results))
    assert res.exit_code == 0 and "1 cell(s) run" in res.output, res.output
    assert set(valid_records(results)) == {f"{run_id}.json"}
    assert claim_files(results) == []
    # a runner killed after writing the record, before releasing: the next run tidies it
    write_claim(results, run_id, pid=dead_pid())
    res = bench(*grid_args(tiny_data_root, results))
    assert "0 cell(s) run, 1 already done" in res.output and claim_files(results) == []


def test_claim_liveness_rules(tmp_path, monkeypatch) -> None:
    """Which claims count as held: this machine's by pid and process start time, a rebooted
    machine's never, another machine's until it has been silent for the stale timeout."""
    me = claims.this_process()
    cases = {
        "live": ({"pid": me["pid"]}, True),
        "dead pid": ({"pid": dead_pid()}, False),
        "pid reused": ({"pid": me["pid"], "process_start": "1"}, False),
        "rebooted": ({"pid": me["pid"], "boot_id": "another-boot"}, False),
        "other host": ({"host": "node-17", "pid": 1}, True),
    }
    for name, (info, alive) in cases.items():
        run_id = name.replace(" ", "-") + "-s0-0123456789ab"
        write_claim(tmp_path, run_id, **info)
        assert (claims.try_claim(tmp_path, run_id) is None) == alive, name
    state = claims.current_claims(tmp_path)
    assert state["other-host-s0-0123456789ab"].alive and state["live-s0-0123456789ab"].alive
    # the other host's claim once silent for longer than the (configured) stale timeout
    path = claims.claims_dir(tmp_path) / "other-host-s0-0123456789ab.claim"
    old = time.time() - 3 * 3600
    os.utime(path, (old, old))
    assert claims.try_claim(tmp_path, "other-host-s0-0123456789ab") is None  # 24 h default
    monkeypatch.setenv(claims.STALE_ENV, "2")
    taken = claims.try_claim(tmp_path, "other-host-s0-0123456789ab")
    assert taken is not None and not path.exists()
    taken.release()
    monkeypatch.setenv(claims.STALE_ENV, "soon")
    with pytest.raises(Exception, match="MEDPEFT_STALE_CLAIM_HOURS"):
        claims.stale_after_s()


def test_a_held_claim_keeps_its_heartbeat(tmp_path, monkeypatch) -> None:
    """Runners on other machines judge a claim by its mtime: the holder refreshes it whatever
    the cell is doing, and stops once it has released the claim."""
    monkeypatch.setattr(claims, "HEARTBEAT_S", 0.02)
    claim = claims.try_claim(tmp_path, "beat-s0-0123456789ab")
    assert claim is not None
    old = time.time() - 3 * 3600
    os.utime(claim.path, (old, old))
    wait_for(lambda: claim.path.stat().st_mtime > old + 3600, timeout=5)
    claim.release()
    assert not claim.path.exists()

    def beating() -> bool:
        return any(t.name == f"claim {claim.run_id}" for t in threading.enumerate())

    wait_for(lambda: not beating(), timeout=5)  # the heartbeat thread ends with the claim


def test_only_one_of_racing_runners_takes_over_a_dead_claim(tmp_path) -> None:
    gone = dead_pid()
    for round_ in range(20):
        run_id = f"race{round_}-s0-0123456789ab"
        write_claim(tmp_path, run_id, pid=gone)
        barrier = threading.Barrier(4)
        won: list[claims.Claim] = []

        def take(run_id=run_id, barrier=barrier, won=won) -> None:
            barrier.wait()
            claim = claims.try_claim(tmp_path, run_id)
            if claim is not None:
                won.append(claim)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, round_
        (files,) = [p for p in claim_files(tmp_path) if p.name.startswith(f"{run_id}.")]
        assert json.loads(files.read_text())["token"] == won[0].token
        won[0].release()
    assert claim_files(tmp_path) == []


# ------------------------------------------------------------------------------ out of memory


def fake_oom_fit(monkeypatch, limit: int) -> list[int]:
    """bench.harness.fit raising CUDA OOM above `limit` images per batch; returns the batch
    sizes it was called with."""
    import bench.harness

    real, seen = bench.harness.fit, []

    def fit(model, train, val, settings, **kwargs):
        seen.append(settings.batch_size)
        if settings.batch_size > limit:
            raise torch.cuda.OutOfMemoryError(f"fake: {settings.batch_size} images do not fit")
        return real(model, train, val, settings, **kwargs)

    monkeypatch.setattr(bench.harness, "fit", fit)
    return seen


@pytest.mark.slow
def test_oom_record_then_oom_retry_halves_the_batch(tmp_path, tiny_data_root, monkeypatch) -> None:
    results = tmp_path / "results"
    (run_id,) = planned_ids(tiny_data_root, results, ["linear"], [0])
    seen = fake_oom_fit(monkeypatch, limit=4)
    # without --oom-retry: an oom record with the batch size, the grid goes on, and exits 1
    res = bench(*grid_args(tiny_data_root, results, "--methods", "linear,full"))
    assert res.exit_code == 1 and "2 oom cell(s): exit status 1" in res.output, res.output
    recs = {
        json.loads(t)["config"]["method"]: json.loads(t) for t in valid_records(results).values()
    }
    assert {m: r["status"] for m, r in recs.items()} == {"linear": "oom", "full": "oom"}
    assert "at batch size 16" in recs["linear"]["error"] and "oom_retries" not in recs["linear"]
    assert seen == [16, 16]
    # --oom-retry retries those oom records: 16 -> 8 -> 4 fits; same cell, same record file
    seen.clear()
    res = bench(*grid_args(tiny_data_root, results, "--oom-retry"))
    assert res.exit_code == 0 and "1 cell(s) run" in res.output, res.output
    assert seen == [16, 8, 4]
    rec = json.loads((results / f"{run_id}.json").read_text())
    assert rec["status"] == "ok" and rec["run_id"] == run_id
    assert rec["config"]["batch_size"] == 16
    assert rec["oom_retries"] == [16, 8, 4] and rec["training"]["batch_size_used"] == 4
    # the retried record is finished: a rerun skips it
    seen.clear()
    res = bench(*grid_args(tiny_data_root, results, "--oom-retry"))
    assert "0 cell(s) run, 1 already done" in res.output and seen == []


def test_oom_retry_down_to_batch_one(tmp_path, tiny_data_root, monkeypatch) -> None:
    results = tmp_path / "results"
    seen = fake_oom_fit(monkeypatch, limit=0)  # nothing fits
    res = bench(*grid_args(tiny_data_root, results, "--oom-retry", "--batch-size", "12"))
    assert res.exit_code == 1, res.output
    (text,) = valid_records(results).values()
    rec = json.loads(text)
    assert seen == [12, 6, 3, 1] and rec["oom_retries"] == [12, 6, 3, 1]
    assert rec["status"] == "oom" and "at batch size 1:" in rec["error"]
    assert rec["config"]["batch_size"] == 12 and "training" not in rec
    # retried down to 1: finished, even under --oom-retry
    res = bench(*grid_args(tiny_data_root, results, "--oom-retry", "--batch-size", "12"))
    assert "0 cell(s) run, 1 already done" in res.output and seen == [12, 6, 3, 1]


def test_requeued_slurm_job_takes_over_its_own_claim(tmp_path, monkeypatch) -> None:
    """A preempted job requeued on another node finds its earlier run's claim (another host,
    fresh): same Slurm job and array task, so it is dead; another job's claim is respected."""
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    claims.this_process.cache_clear()
    try:
        assert claims.this_process()["slurm_job"] == "4242_3"
        write_claim(tmp_path, "mine-s0-0123456789ab", host="node-1", pid=1, slurm_job="4242_3")
        write_claim(tmp_path, "other-s0-0123456789ab", host="node-1", pid=1, slurm_job="4242_4")
        taken = claims.try_claim(tmp_path, "mine-s0-0123456789ab")
        assert taken is not None
        taken.release()
        assert claims.try_claim(tmp_path, "other-s0-0123456789ab") is None
    finally:
        claims.this_process.cache_clear()


def test_stale_temp_files_are_tidied_fresh_ones_and_others_kept(tmp_path) -> None:
    """Temp files older than an hour (a dead writer's) go; a younger one may be a write in
    progress, and files that are not the suite's temp files are never touched."""
    from bench.records import remove_stale_temp

    old = time.time() - 2 * 3600
    dead = tmp_path / ".demo-full-s0-0123456789ab.x1y2z3w4.tmp"  # write_record's temp name
    fresh = tmp_path / ".demo-lora-s0-0123456789ab.a1b2c3d4.tmp"
    foreign = tmp_path / ".notes.tmp"
    for path in (dead, fresh, foreign):
        path.write_text("{")
    os.utime(dead, (old, old))
    os.utime(foreign, (old, old))
    assert remove_stale_temp(tmp_path) == 1
    assert not dead.exists() and fresh.exists() and foreign.exists()
    folder = claims.claims_dir(tmp_path)
    folder.mkdir()
    stale = folder / ".run.claim.123.tmp"
    stale.write_text("")
    os.utime(stale, (old, old))
    assert claims.remove_stale_temp(tmp_path) == 1 and not stale.exists()
