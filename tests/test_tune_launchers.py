"""`bench tune` through the launchers: the stages (a rung's trials, then the finals) run in fresh
processes or as Slurm job arrays (submitit's local cluster, the same code path as a real one),
the selection runs in the launching process from the records, and it picks what a local search
picks; without --wait each call submits one stage and the next call continues from the records.
The data and ViT are the suite's tiny ones (tests/conftest.py): these tests spawn processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import claims
from bench.cli import app
from bench.records import load_records
from tests.conftest import wait_for

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _workers_import_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers are fresh Pythons: they import `bench` from this checkout, on one thread."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# two learning rates, far apart: the search has something to choose
SEARCH = ("--methods", "linear", "--space", "linear.lr=1e-7,0.03", "--set",
          "linear.weight_decay=0")  # fmt: skip


def tune(data_root: Path, results: Path, *extra: str, search: tuple[str, ...] = SEARCH):
    """`bench tune`, budget 2, on the tiny data (1 epoch unless `extra` says)."""
    args = ["tune", "--datasets", "pneumoniamnist", "--data-root", str(data_root), "--backbone",
            "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size", "16", "--device",
            "cpu", "--augment", "none", "--results", str(results), "--no-progress", "--budget",
            "2", *search, *extra]  # fmt: skip
    if "--epochs" not in extra:
        args += ["--epochs", "1"]
    return runner.invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})


def by_role(results: Path) -> dict[str, dict[str, dict]]:
    """role -> run id -> record, for every record in `results`."""
    out: dict[str, dict[str, dict]] = {"trial": {}, "final": {}}
    for rec in load_records(results).records:
        out[rec["config"]["tuning"]["role"]][rec["run_id"]] = rec
    return out


def selected(finals: dict[str, dict]) -> list[tuple]:
    """(selected trial index, its configuration, the lr trained) of each final."""
    return sorted(
        (f["tuning"]["selected"], repr(f["hyperparameters"]["searched"]), f["config"]["lr"])
        for f in finals.values()
    )


@pytest.mark.slow
def test_launched_tunes_match_the_local_tune(tiny_data_root, tmp_path) -> None:
    """The same search here, in fresh processes and as Slurm arrays (--wait): the same trial
    and final run ids, the same selection; each launched record was written by a worker. The
    local search, run on the subprocess search's records, selects the same and runs nothing."""
    local = tune(tiny_data_root, tmp_path / "local")
    assert local.exit_code == 0, local.output
    want = by_role(tmp_path / "local")
    assert len(want["trial"]) == 2 and len(want["final"]) == 1
    for launcher in (["subprocess"], ["slurm", "--slurm-cluster", "local", "--wait"]):
        results = tmp_path / launcher[0]
        first = tune(tiny_data_root, results, "--launcher", *launcher)
        assert first.exit_code == 0, first.output
        assert "search: 2 trial(s) run, 0 already done" in first.output
        assert "selected pneumoniamnist/linear" in first.output
        got = by_role(results)
        for role in ("trial", "final"):
            assert set(got[role]) == set(want[role]), (launcher, role)
        assert selected(got["final"]) == selected(want["final"])
        launched = [r["env"]["launcher"]["kind"] for g in got.values() for r in g.values()]
        assert launched == [launcher[0]] * 3
        assert {r["env"]["pid"] for g in got.values() for r in g.values()}.isdisjoint({os.getpid()})
        # the final ran after the selection: its note lists both trials' scores
        (final,) = got["final"].values()
        assert [t["run_id"] for t in final["tuning"]["trials"]] == [
            t["run_id"] for t in next(iter(want["final"].values()))["tuning"]["trials"]
        ]
    before = {p.name: p.read_text() for p in (tmp_path / "subprocess").glob("*.json")}
    again = tune(tiny_data_root, tmp_path / "subprocess", "--launcher", "subprocess")
    assert again.exit_code == 0, again.output
    assert "search: 0 trial(s) run, 2 already done" in again.output
    assert "started " not in again.output  # no process for a done trial or final
    here = tune(tiny_data_root, tmp_path / "subprocess")  # the local search, same records
    assert here.exit_code == 0, here.output
    assert "search: 0 trial(s) run, 2 already done" in here.output
    assert "0 selected cell(s) run, 1 already done" in here.output
    assert {p.name: p.read_text() for p in (tmp_path / "subprocess").glob("*.json")} == before


@pytest.mark.slow
def test_halving_through_the_launcher_runs_its_rungs_in_order(tiny_data_root, tmp_path) -> None:
    """Budget 2, eta 2, 2 epochs: two trials at 1 epoch, the better at 2, then the final; each
    rung starts only after the one before has finished, and the ids match the local search's."""
    extra = ("--epochs", "2", "--scheduler", "halving", "--eta", "2")
    local = tune(tiny_data_root, tmp_path / "local", *extra)
    assert local.exit_code == 0, local.output
    result = tune(tiny_data_root, tmp_path / "r", *extra, "--launcher", "subprocess")
    assert result.exit_code == 0, result.output
    got, want = by_role(tmp_path / "r"), by_role(tmp_path / "local")
    assert set(got["trial"]) == set(want["trial"]) and set(got["final"]) == set(want["final"])
    stages = [line for line in result.output.splitlines() if line.startswith("stage ")]
    assert stages == ["stage 2 trial(s) at 1 epoch(s)", "stage 1 trial(s) at 2 epoch(s)",
                      "stage 1 final(s): the selected configurations at every seed"]  # fmt: skip
    rungs = sorted(got["trial"].values(), key=lambda r: (r["config"]["epochs"], r["started_at"]))
    assert [r["config"]["epochs"] for r in rungs] == [1, 1, 2]
    assert rungs[2]["started_at"] >= max(r["finished_at"] for r in rungs[:2])
    (final,) = got["final"].values()
    assert final["started_at"] >= rungs[2]["finished_at"] and final["config"]["epochs"] == 2
    assert [len(r["trials"]) for r in final["tuning"]["scheduler"]["rungs"]] == [2, 1]


@pytest.mark.slow
def test_slurm_without_wait_submits_one_stage_per_call(tiny_data_root, tmp_path) -> None:
    """Without --wait each call submits what the records allow and says what comes next: a
    trial a live runner holds is left to it; once it is released, the next call submits it;
    with every trial recorded, the next call selects and submits the final; the last one
    submits nothing and prints the summary."""
    results = tmp_path / "r"
    slurm = ("--launcher", "slurm", "--slurm-cluster", "local")
    local = tune(tiny_data_root, tmp_path / "local")
    want = by_role(tmp_path / "local")
    assert local.exit_code == 0, local.output
    held, other = sorted(want["trial"])
    claim = claims.try_claim(results, held, about={})  # a live runner (this test) holds it
    assert claim is not None

    def records() -> int:
        return len(list(results.glob("*.json")))

    first = tune(tiny_data_root, results, *slurm)
    assert first.exit_code == 0, first.output
    assert f"running elsewhere {held}" in first.output
    assert "1 cell(s) submitted, 0 done" in first.output
    assert "submitted 1 trial(s) at 1 epoch(s)" in first.output
    assert "selects from the trial records and submits the next rung or the finals" in first.output
    wait_for(lambda: records() == 1, timeout=120)
    assert {p.stem.rsplit("-", 1)[1] for p in results.glob("*.json")} == {other.rsplit("-", 1)[1]}
    claim.release()
    second = tune(tiny_data_root, results, *slurm)
    assert second.exit_code == 0, second.output
    assert "submitted 1 trial(s) at 1 epoch(s)" in second.output
    assert "final(s)" not in second.output and "selected" not in second.output
    wait_for(lambda: records() == 2, timeout=120)
    third = tune(tiny_data_root, results, *slurm)
    assert third.exit_code == 0, third.output
    assert "selected pneumoniamnist/linear" in third.output
    assert "search: 0 trial(s) run, 2 already done" in third.output
    assert "submitted 1 final(s): the selected configurations at every seed" in third.output
    assert "submits nothing more and prints the summary" in third.output
    wait_for(lambda: records() == 3, timeout=120)
    last = tune(tiny_data_root, results, *slurm)
    assert last.exit_code == 0, last.output
    assert (
        "submitted" not in last.output and "0 selected cell(s) run, 1 already done" in last.output
    )
    got = by_role(results)
    assert set(got["final"]) == set(want["final"])
    assert selected(got["final"]) == selected(want["final"])


LORA = ("--methods", "lora", "--space", "lora.rank=0", "--space", "lora.lr=1e-3", "--space",
        "lora.weight_decay=0")  # fmt: skip


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ((*SEARCH, "--space", "linear.rank=1,2"), "no such hyperparameter"),
        ((*SEARCH, "--budget", "0"), "--budget must be >= 1"),
        ((*SEARCH, "--set", "linear.lr=0.2"), "both pinned (--set) and searched"),
        ((*SEARCH, "--space", "vpt.lr=1"), "not a method of this grid"),
        (LORA, "--space lora.rank: each value must be an integer >= 1, got 0"),
    ],
)
@pytest.mark.parametrize("launcher", ["subprocess", "slurm"])
def test_bad_search_options_fail_before_anything_is_launched(
    tiny_data_root, tmp_path, search, message, launcher
) -> None:
    """What a local tune refuses, a launched one refuses before the first launch: no job, no
    process, no record (Slurm builds the trial models without reading the data)."""
    results = tmp_path / "r"
    more = ("--slurm-cluster", "local") if launcher == "slurm" else ()
    result = tune(tiny_data_root, results, "--launcher", launcher, *more, search=search)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (results / ".slurm").exists() and not (results / ".launch").exists()
    assert not list(results.glob("*.json"))


def test_a_real_cluster_gets_the_trials_as_one_gpu_array(
    tiny_data_root, tmp_path, monkeypatch
) -> None:
    """On a login node (sbatch on PATH, the executor faked): the first stage is one job array of
    the trials, planned for the GPU the jobs get, each spec a trial with its annotation; nothing
    is trained or recorded here."""
    import submitit

    from tests.test_launchers import FakeExecutor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    results = tmp_path / "r"
    args = ["tune", "--datasets", "pneumoniamnist", "--data-root", str(tiny_data_root),
            "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
            "--epochs", "1", "--results", str(results), "--no-progress", "--budget", "2",
            *SEARCH, "--launcher", "slurm", "--partition", "gpu"]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "submitted 2 trial(s) at 1 epoch(s)" in result.output
    ex = FakeExecutor.made[-1]
    assert ex.cluster == "slurm" and ex.params["slurm_partition"] == "gpu"
    assert len(ex.specs) == 2
    assert {s["cell"]["device"] for s in ex.specs} == {"cuda"}
    assert {s["cell"]["tuning"]["role"] for s in ex.specs} == {"trial"}
    assert sorted(s["cell"]["lr"] for s in ex.specs) == [1e-7, 0.03]
    assert {s["annotation"]["hyperparameters"]["regime"] for s in ex.specs} == {"trial"}
    assert not list(results.glob("*.json"))
