"""Launchers of `bench run`: each cell in a fresh process, a killed worker leaving the grid
resumable, Slurm through submitit's local cluster (the same code path as a real cluster), the
requeue on preemption, the executor's parameters, and bad option combinations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from bench import claims
from bench.cli import app
from bench.grid import GridRequest, plan
from bench.launchers import CellJob, LaunchOptions, launch_options, run_slurm
from bench.records import read_record, write_record
from tests.conftest import claim_pids, grid_args

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def planned_ids(
    data_root: Path, results: Path, methods: list[str], seeds: list[int], epochs: int = 1
) -> set[str]:
    req = GridRequest(methods=methods, datasets=["pneumoniamnist"], seeds=seeds, backbone="test_vit",
                     pretrained=False, img_size=32, epochs=epochs, batch_size=16, results=results,
                     data_root=data_root, device="cpu")  # fmt: skip
    return {c.run_id for c in plan(req, dry_run=True).cells}


def records(results: Path) -> dict[str, dict]:
    """run id -> record for every *.json; fails on any file that is not a whole record."""
    out = {}
    for path in sorted(results.glob("*.json")):
        rec = read_record(path)
        assert rec is not None, f"{path.name} is not a whole record"
        out[rec["run_id"]] = rec
    return out


def texts(results: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(results.glob("*.json"))}


# ------------------------------------------------------------------------- subprocess launcher


@pytest.mark.slow
def test_subprocess_launcher_runs_each_cell_in_a_fresh_process(tmp_path, tiny_data_root) -> None:
    """2 methods x 2 seeds: four records with the planned run ids, each written by its own
    process (not this one); a rerun starts no process and leaves the records untouched."""
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear,full", "--seeds", "0,1",
                     "--epochs", "1", "--launcher", "subprocess")  # fmt: skip
    first = bench(*args)
    assert first.exit_code == 0, first.output
    recs = records(results)
    assert set(recs) == planned_ids(tiny_data_root, results, ["linear", "full"], [0, 1])
    assert all(r["status"] == "ok" for r in recs.values())
    pids = [r["env"]["pid"] for r in recs.values()]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")  # no --gpus: the children inherit it
    assert all(r["env"]["launcher"] == {"kind": "subprocess", "gpu": gpu} for r in recs.values())
    assert first.output.count("started ") == 4
    before = texts(results)
    again = bench(*args)
    assert again.exit_code == 0, again.output
    assert "0 cell(s) to run in fresh processes" in again.output
    assert "4 already done" in again.output and "started " not in again.output
    assert texts(results) == before


@pytest.mark.slow
def test_killed_worker_leaves_the_grid_resumable(tmp_path, tiny_data_root) -> None:
    """SIGKILL the worker of the first cell mid-cell: the launcher reports it, runs the other
    cell, exits 1; the killed cell has no record and a rerun runs exactly that cell."""
    results = tmp_path / "results"
    # 15 epochs of full fine-tuning: a cell long enough to be killed mid-way
    args = grid_args(tiny_data_root, results, "--methods", "full", "--seeds", "0,1",
                     "--epochs", "15", "--launcher", "subprocess")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "launcher.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
        end = time.monotonic() + 90
        while not (workers := claim_pids(results) - {proc.pid}):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < end, "no worker claimed a cell"
            time.sleep(0.01)
        (victim,) = workers
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=120) == 1, log.read_text()
    output = log.read_text()
    assert output.count("crashed") == 1 and "killed by SIGKILL" in output, output
    assert f"worker {victim} killed" in output
    expected = planned_ids(tiny_data_root, results, ["full"], [0, 1], epochs=15)
    survivors = records(results)
    assert len(survivors) == 1 and set(survivors) < expected
    assert all(r["env"]["pid"] != victim for r in survivors.values())
    before = texts(results)
    again = bench(*args)
    assert again.exit_code == 0, again.output
    assert "1 cell(s) to run in fresh processes" in again.output
    assert "1 already done" in again.output and "running elsewhere" not in again.output
    final = records(results)
    assert set(final) == expected and all(r["status"] == "ok" for r in final.values())
    assert {k: v for k, v in texts(results).items() if k in before} == before
    assert not list(claims.claims_dir(results).glob("*.claim"))  # the dead worker's taken over


# ------------------------------------------------------------------------------ Slurm launcher


@pytest.mark.slow
def test_slurm_launcher_on_the_local_cluster(tmp_path, tiny_data_root) -> None:
    """The Slurm code path through submitit's local executor: one job per cell, one record per
    cell written inside its job; a rerun submits nothing."""
    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear,full", "--seeds", "0",
                     "--epochs", "1", "--device", "cpu", "--launcher", "slurm",
                     "--slurm-cluster", "local", "--partition", "ignored-here",
                     "--max-concurrent", "2", "--wait")  # fmt: skip
    first = bench(*args)
    assert first.exit_code == 0, first.output
    assert "2 cell(s) submitted, 0 done" in first.output
    recs = records(results)
    assert set(recs) == planned_ids(tiny_data_root, results, ["linear", "full"], [0])
    assert all(r["status"] == "ok" for r in recs.values())
    launchers = [r["env"]["launcher"] for r in recs.values()]
    assert {lau["kind"] for lau in launchers} == {"slurm"}
    assert len({lau["job_id"] for lau in launchers}) == 2
    pids = {r["env"]["pid"] for r in recs.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    submitted = sorted((results / ".slurm").iterdir())
    before = texts(results)
    again = bench(*args)
    assert again.exit_code == 0, again.output
    assert "0 cells to submit, 2 done" in again.output
    assert sorted((results / ".slurm").iterdir()) == submitted  # no job was submitted
    assert texts(results) == before


def test_checkpoint_requeues_the_same_cell() -> None:
    """Preemption: submitit requeues what `checkpoint` returns; it must be this job callable
    with the same spec, so the requeued job runs the same cell."""
    import submitit

    job = CellJob()
    spec = {"results": "r", "run_id": "demo-linear-s0-0123456789ab"}
    delayed = job.checkpoint(spec)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is job
    assert delayed.args == (spec,) and delayed.kwargs == {}


class FakeExecutor:
    """Stands in for submitit.AutoExecutor: records the parameters and the submitted specs."""

    made: ClassVar[list[FakeExecutor]] = []

    def __init__(self, folder: Path, cluster: str) -> None:
        self.folder, self.cluster, self.params, self.specs = folder, cluster, {}, []
        FakeExecutor.made.append(self)

    def update_parameters(self, **params) -> None:
        self.params.update(params)

    def map_array(self, fn, specs):
        self.fn, self.specs = fn, list(specs)
        return [type("Job", (), {"job_id": f"77_{i}"})() for i in range(len(self.specs))]


def test_slurm_submission_parameters_and_skipping(tmp_path, tiny_data_root, monkeypatch) -> None:
    """A real-cluster submission (executor faked): partition, time, GPUs per job and array
    parallelism reach submitit; finished cells are not submitted; jobs plan for the GPU."""
    import submitit

    results = tmp_path / "results"
    ids = sorted(planned_ids(tiny_data_root, results, ["linear"], [0, 1]))
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0, 1],
                     backbone="test_vit", pretrained=False, img_size=32, epochs=1, batch_size=16,
                     results=results, data_root=tiny_data_root)  # fmt: skip
    opts = LaunchOptions(kind="slurm", partition="gpu", time_min=90, gpus_per_job=1,
                         max_concurrent=3, cluster="slurm")  # fmt: skip
    cuda_cells = run_slurm(req, opts, console=_Quiet())
    assert cuda_cells.skipped == 0
    ex = FakeExecutor.made[-1]
    assert ex.cluster == "slurm" and ex.folder == results / ".slurm"
    assert ex.params["slurm_partition"] == "gpu" and ex.params["timeout_min"] == 90
    assert ex.params["gpus_per_node"] == 1 and ex.params["slurm_array_parallelism"] == 3
    assert isinstance(ex.fn, CellJob) and len(ex.specs) == 2
    assert {s["cell"]["device"] for s in ex.specs} == {"cuda"}
    assert {s["cell"]["precision"] for s in ex.specs} == {"bf16"}
    # the jobs' GPUs cannot be asked from here: the record will say why bf16
    assert all("cannot be asked here" in s["annotation"]["precision_reason"] for s in ex.specs)
    # the jobs plan for cuda, so their run ids are not the CPU ones
    gpu_ids = [s["run_id"] for s in ex.specs]
    assert not set(gpu_ids) & set(ids)
    # one finished: only the other is submitted
    identity = {"dataset": "pneumoniamnist", "method": "linear", "backbone": "test_vit", "seed": 0}
    write_record(results, {"schema": 1, "run_id": gpu_ids[0], "status": "ok", "config": identity})
    outcome = run_slurm(req.replace(device="auto"), opts, console=_Quiet())
    assert outcome.skipped == 1
    assert [s["run_id"] for s in FakeExecutor.made[-1].specs] == [gpu_ids[1]]


class _Quiet:
    def print(self, *args, **kwargs) -> None:
        pass


def test_slurm_config_file_and_cli_precedence(tmp_path) -> None:
    cfg = tmp_path / "slurm.toml"
    cfg.write_text('partition = "a100"\ntime = 30\nmax_concurrent = 4\ncluster = "local"\n')
    opts = launch_options("slurm", slurm_config=cfg, partition="h100")
    assert (opts.partition, opts.time_min, opts.max_concurrent) == ("h100", 30, 4)
    assert opts.cluster == "local" and opts.gpus_per_job == 1
    cpu = launch_options("slurm", slurm_config=cfg, device="cpu")
    assert cpu.gpus_per_job == 0 and cpu.partition == "a100"


SBATCH_TOML = """
cluster = "local"
account = "proj-42"
qos = "high"
mem = "64G"
cpus_per_task = 8
constraint = "a100"
exclude = "node[01-02]"
nodelist = "node07"
setup = ["module load cuda/12.1", "source ~/venvs/bench/bin/activate"]

[additional]
mail-type = "END"
exclusive = true
"""


def _sbatch_script(params: dict, folder: Path, monkeypatch) -> str:
    """The sbatch file submitit's Slurm executor would submit with these parameters."""
    import submitit
    from submitit.auto.auto import AutoExecutor  # the real one, where a test fakes submitit's

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun
    executor = AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**params)
    return executor._executor._make_submission_file_text("python -m job", "uid")


def test_slurm_config_keys_reach_submitit_and_the_sbatch_script(
    tmp_path, tiny_data_root, monkeypatch
) -> None:
    """Every sbatch key of --slurm-config reaches submitit under its own name and ends up in
    the job script; submitit's local cluster accepts them (and ignores them)."""
    import submitit
    from submitit.auto.auto import AutoExecutor

    cfg = tmp_path / "slurm.toml"
    cfg.write_text(SBATCH_TOML)
    opts = launch_options("slurm", slurm_config=cfg, partition="gpu")
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0],
                      backbone="test_vit", pretrained=False, img_size=32, epochs=1, batch_size=16,
                      results=tmp_path / "results", data_root=tiny_data_root)  # fmt: skip
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    run_slurm(req, opts, console=_Quiet())
    params = FakeExecutor.made[-1].params
    assert {k: v for k, v in params.items() if k.startswith("slurm_")} == {
        "slurm_partition": "gpu",
        "slurm_account": "proj-42",
        "slurm_qos": "high",
        "slurm_mem": "64G",
        "slurm_cpus_per_task": 8,
        "slurm_constraint": "a100",
        "slurm_exclude": "node[01-02]",
        "slurm_nodelist": "node07",
        "slurm_setup": ["module load cuda/12.1", "source ~/venvs/bench/bin/activate"],
        "slurm_additional_parameters": {"mail-type": "END", "exclusive": True},
    }
    AutoExecutor(folder=tmp_path / "local", cluster="local").update_parameters(**params)

    script = _sbatch_script(params, tmp_path / "sbatch", monkeypatch).splitlines()
    for line in ["#SBATCH --account=proj-42", "#SBATCH --qos=high", "#SBATCH --mem=64G",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --constraint=a100",
                 "#SBATCH --exclude='node[01-02]'", "#SBATCH --nodelist=node07",
                 "#SBATCH --partition=gpu", "#SBATCH --mail-type=END", "#SBATCH --exclusive",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --time=60"]:  # fmt: skip
        assert line in script, line
    setup = script.index("module load cuda/12.1")
    assert script[setup + 1] == "source ~/venvs/bench/bin/activate"
    assert setup < next(i for i, line in enumerate(script) if line.startswith("srun "))

    cfg.write_text('cluster = "local"\nmem_gb = 32\n')
    opts = launch_options("slurm", slurm_config=cfg)
    assert opts.sbatch == {"slurm_mem_gb": 32}
    assert (
        "#SBATCH --mem=32GB"
        in _sbatch_script(
            {"timeout_min": 5, **opts.sbatch}, tmp_path / "sbatch", monkeypatch
        ).splitlines()
    )


BAD_SLURM_TOML = [
    ('acount = "p"\n', "unknown key 'acount'; valid: partition, time, gpus_per_job, "
     "max_concurrent, cluster, account, qos, mem, mem_gb, cpus_per_task, constraint, exclude, "
     "nodelist, setup, additional"),
    ('mem = "64G"\nmem_gb = 64\n', "mem and mem_gb both given"),
    ('mem = "lots"\n', "mem 'lots': expected Slurm's syntax, like 64G or 500M"),
    ("cpus_per_task = 0\n", "cpus_per_task must be > 0, got 0"),
    ('qos = 3\n', "qos must be a string, got 3"),
    ('setup = "module load cuda"\n', "setup must be a list of strings, got 'module load cuda'"),
    ("setup = [1]\n", "setup must be a list of strings (shell lines), got [1]"),
    ('[additional]\naccount = "p"\n', "additional.account: use the top-level key account"),
    ('[additional]\noutput = "x.log"\n', "additional.output: set by bench and submitit"),
    ("[additional]\nrequeue = false\n", "additional.requeue must be a string, an integer or true"),
]  # fmt: skip


@pytest.mark.parametrize(("toml", "message"), BAD_SLURM_TOML)
def test_bad_slurm_config_is_refused_before_submitting(
    tmp_path, tiny_data_root, toml, message
) -> None:
    """A misspelt or ill-typed key fails on one line naming it; nothing is submitted."""
    cfg = tmp_path / "slurm.toml"
    cfg.write_text('cluster = "local"\n' + toml)
    results = tmp_path / "r"
    res = bench(*grid_args(tiny_data_root, results, "--methods", "linear", "--launcher", "slurm",
                           "--slurm-config", str(cfg)))  # fmt: skip
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"--slurm-config {cfg}: {message}" in err
    assert not results.exists()


# ----------------------------------------------------------------------- bad option combinations

BAD = [
    (["--gpus", "0,1"], "--gpus needs --launcher subprocess"),
    (["--launcher", "slurm", "--gpus", "0"], "--gpus needs --launcher subprocess"),
    (["--launcher", "subprocess", "--gpus", "0", "--device", "cpu"], "--gpus with --device cpu"),
    (["--launcher", "subprocess", "--gpus", "0,0"], "a GPU is listed twice"),
    (["--launcher", "subprocess", "--gpus", "0;rm"], "expected GPU indices"),
    (["--partition", "gpu"], "--partition is a Slurm option; it needs --launcher slurm"),
    (["--launcher", "subprocess", "--wait"], "--wait is a Slurm option"),
    (["--launcher", "slurm", "--slurm-config", "{tmp}/none.toml"], "none.toml: no such file"),
    (["--launcher", "slurm", "--slurm-config", "{tmp}/bad.toml"], "unknown key 'partiton'"),
    (["--launcher", "slurm", "--slurm-cluster", "local", "--time", "0"], "--time must be >= 1"),
    (["--launcher", "slurm", "--slurm-cluster", "local", "--device", "cpu", "--gpus-per-job", "1"],
     "--gpus-per-job 1 with --device cpu"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_launcher_options_fail_on_one_line(tmp_path, tiny_data_root, extra, message) -> None:
    (tmp_path / "bad.toml").write_text('partiton = "gpu"\n')
    results = tmp_path / "r"
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    res = bench(*grid_args(tiny_data_root, results, "--methods", "linear", *extra))
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err
    assert not results.exists()


@pytest.mark.skipif(bool(__import__("shutil").which("sbatch")), reason="this machine has Slurm")
def test_slurm_without_sbatch_says_how_to_run_locally(tmp_path, tiny_data_root) -> None:
    res = bench(*grid_args(tiny_data_root, tmp_path / "r", "--launcher", "slurm"))
    assert res.exit_code == 2
    assert "no `sbatch` on this machine" in res.stderr and "--slurm-cluster local" in res.stderr
