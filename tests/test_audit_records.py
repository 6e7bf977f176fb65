"""Results folders under hostile or faulty conditions: nothing lost, nothing counted twice, one
clear line instead of a traceback, and an exit status that tells a scheduler what happened.

Cases (each failed before its fix):
  1. a record without its cell's identity (`"config": {}`) crashed `bench report`  test_record_without_identity_is_skipped
  2. property tests draw the same cases in every CI run                      test_ci_profile_draws_the_same_cases
  3. a copied record (`x (copy).json`, `backup.json`) counted as extra runs  test_copies_are_counted_once
  4. another cell's record at a cell's path counted as that cell finished    test_record_of_another_cell_is_foreign
  5. a FIFO or a `/dev/zero` link named *.json hung report/status/run       test_special_files_are_never_read
  6. a huge file named *.json was read whole                                test_oversized_file_is_not_a_record
  7. deeply nested JSON raised RecursionError                               test_deep_nesting_is_unreadable
  8. records were mode 0600 whatever the umask                              test_records_honour_the_umask
  9. report files were not atomic (a killed report left half a figure)      test_report_figures_are_written_whole, test_write_atomic_keeps_the_old_file
 10. a long dataset name made figure names too long (ENAMETOOLONG)           test_long_dataset_name_reports, test_card_name_is_bounded
 11. `report --out` an existing file; read-only results; `.claims` a file: tracebacks
                                                    test_report_out_is_a_file, test_unwritable_results_fail_before_work
 12. a full disk lost a trained cell's record and aborted with a traceback  test_full_disk_keeps_the_record
 13. `bench list` let a bad card's UserError out as a traceback             test_list_with_a_bad_card_is_one_line
 14. `--set` integers took '1_000' and '٣' (`--seeds` refuses them)         test_set_numbers_are_ascii
Exit statuses (1 when cells failed, --allow-failures 0) are in
tests/test_cli.py::test_failing_and_diverging_cells_do_not_stop_the_grid and tests/test_crash_safety.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import records as records_mod
from bench.cli import app
from bench.grid import GridRequest, plan
from bench.records import load_records, read_record, write_atomic, write_record

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GRID = ["--methods", "linear", "--datasets", "pneumoniamnist", "--backbone", "test_vit",
        "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16"]  # fmt: skip


def bench(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def cells(data_root: Path, results: Path, seeds: list[int]) -> list:
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=seeds,
                     backbone="test_vit", pretrained=False, img_size=32, epochs=1, batch_size=16,
                     results=results, data_root=data_root)  # fmt: skip
    return plan(req, dry_run=True).cells


def record(cell, value: float = 0.75) -> dict:
    """A finished record of `cell`, as the harness writes it (the fields the report reads)."""
    return {
        "schema": 1, "run_id": cell.run_id, "status": "ok", "error": None,
        "config": cell.to_dict(),
        "metrics": {"primary_metric": "auc", "primary": value, "test": {"auc": value}},
        "params": {"trainable_params": 66, "trainable_pct": 1.0},
    }  # fmt: skip


def report(results: Path, out: Path, *extra: str):
    res = bench("report", "--results", str(results), "--out", str(out), *extra)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def good_record(run_id: str = "demo-linear-s0-0123456789ab", **config) -> dict:
    cfg = {"method": "linear", "dataset": "demo", "seed": 0, "backbone": "test_vit",
           "pretrained": False, "epochs": 1, "batch_size": 8, "img_size": 32, "lr": 0.01,
           "weight_decay": 0.0, "warmup_epochs": 1.0, "grad_clip": 1.0, "augment": "none",
           "device": "cpu", "precision": "fp32", "shots": None, "split_seed": 0, "hparams": {},
           **config}  # fmt: skip
    return {"schema": 1, "run_id": run_id, "status": "ok", "error": None, "config": cfg,
            "metrics": {"primary_metric": "accuracy", "primary": 0.5, "test": {"accuracy": 0.5}},
            "params": {"trainable_params": 10, "trainable_pct": 0.5}}  # fmt: skip


# ------------------------------------------------------------------ CI and record identity


def test_record_without_identity_is_skipped(tmp_path: Path) -> None:
    """The draw that broke CI: a record whose config is empty has no method to sort."""
    results = tmp_path / "results"
    results.mkdir()
    write_record(results, good_record())
    empty = results / "empty.json"
    empty.write_text(json.dumps({**good_record("demo-linear-s1-0123456789ab"), "config": {}}))
    assert read_record(empty) is None
    res = report(results, tmp_path / "out", "--no-plots")
    assert res.exit_code == 0, res.output
    assert f"skipped {empty}: not a medpeft-bench record" in flat(res.output)
    assert "(1 record(s))" in res.output


@pytest.mark.slow
def test_ci_profile_draws_the_same_cases(tmp_path: Path) -> None:
    """Under CI=true the suite's Hypothesis profile is derandomised: two processes draw the same
    cases, and the settings the test modules build inherit it."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests")
        import conftest  # noqa: F401  (loads the profile, as pytest does first)
        from hypothesis import given, settings, strategies as st
        import test_hostile_input
        assert test_hostile_input.FUZZ.derandomize and test_hostile_input.FUZZ.database is None
        seen = []

        @settings(max_examples=20)
        @given(st.text(), st.integers())
        def draw(text, number):
            seen.append((text, number))

        draw()
        print(repr(seen))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**env, "CI": "true"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[0].stdout == runs[1].stdout and len(eval(runs[0].stdout)) >= 10


# ------------------------------------------------------------------ copies and foreign records


def test_copies_are_counted_once(tmp_path: Path, tiny_data_root: Path) -> None:
    """`bench report` and `bench status` count a record only from the file named for its run
    id, so copies never add runs; both say which files are copies, and they agree."""
    results = tmp_path / "results"
    c0, c1 = cells(tiny_data_root, results, [0, 1])
    original = write_record(results, record(c0, 0.9))
    write_record(results, record(c1, 0.5))
    copies = [results / "0 early (copy).json", results / "backup.json"]  # one sorts first
    for copy in copies:
        copy.write_text(json.dumps(record(c0, 0.1)))
    loaded = load_records(results)
    assert sorted(r["run_id"] for r in loaded.records) == sorted([c0.run_id, c1.run_id])
    assert [r["metrics"]["primary"] for r in loaded.records if r["run_id"] == c0.run_id] == [0.9]
    assert loaded.misplaced == [(copy, c0.run_id) for copy in copies]
    res = report(results, tmp_path / "out", "--no-plots")
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert "(2 record(s))" in text
    for copy in copies:
        assert f"skipped {copy}: a copy of {original.name} (same run id), not counted" in text
    # the mean of the two seeds, the copies left out: (0.9 + 0.5) / 2
    assert "70.00" in (tmp_path / "out" / "scores.md").read_text()
    status = bench("status", "--results", str(results))
    assert status.exit_code == 0, status.output
    assert "2 cell(s) with a record" in flat(status.output)
    assert f"a copy of {original.name}" in flat(status.output)
    grid = bench("status", "--results", str(results), *GRID, "--seeds", "0,1",
                 "--data-root", str(tiny_data_root))  # fmt: skip
    assert "2 of 2 cell(s) done" in flat(grid.output), grid.output


def test_record_of_another_cell_is_foreign(tmp_path: Path, tiny_data_root: Path) -> None:
    """Cell 1's record file holding cell 0's record: `bench run` refuses (it would never run
    cell 1, yet the report counts cell 0), `bench status` says why, the file is untouched."""
    results = tmp_path / "results"
    c0, c1 = cells(tiny_data_root, results, [0, 1])
    squatter = results / f"{c1.run_id}.json"
    results.mkdir()
    squatter.write_text(json.dumps(record(c0)))
    before = squatter.read_bytes()
    assert records_mod.finished(results, c1.run_id) is None
    run = bench("run", *GRID, "--seeds", "0,1", "--data-root", str(tiny_data_root),
                "--results", str(results), "--no-progress")  # fmt: skip
    assert run.exit_code == 2, run.output
    assert "are not medpeft-bench records of those cells" in flat(run.output)
    grid = bench("status", "--results", str(results), *GRID, "--seeds", "0,1",
                 "--data-root", str(tiny_data_root))  # fmt: skip
    text = flat(grid.output)
    assert f"skipped {squatter}: the record of {c0.run_id} under another name, not counted" in text
    assert "sits where the record of pneumoniamnist/linear/seed 1 goes" in text
    assert "0 of 2 cell(s) done" in text
    rep = report(results, tmp_path / "out", "--no-plots")
    assert "(0 record(s))" in rep.output and f"rename it {c0.run_id}.json" in flat(rep.output)
    assert squatter.read_bytes() == before


# ------------------------------------------------------------------ files that are not files


def _in_subprocess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_special_files_are_never_read(tmp_path: Path, tiny_data_root: Path) -> None:
    """A FIFO (no writer: opening it blocking would hang) and a link to /dev/zero (endless):
    listed as unreadable, never opened for reading; run refuses to start over them."""
    results = tmp_path / "results"
    (c0,) = cells(tiny_data_root, results, [0])
    results.mkdir()
    fifo = results / f"{c0.run_id}.json"
    os.mkfifo(fifo)
    zero = results / "zero.json"
    zero.symlink_to("/dev/zero")
    write_record(results, good_record())
    assert read_record(fifo) is None and read_record(zero) is None
    rep = _in_subprocess("report", "--results", str(results), "--out", str(tmp_path / "out"),
                         "--no-plots")  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    for path in (fifo, zero):
        assert f"{path}: not a medpeft-bench record" in flat(rep.stdout)
    status = _in_subprocess("status", "--results", str(results))
    assert status.returncode == 0 and "zero.json" in status.stdout, status.stderr
    run = _in_subprocess("run", *GRID, "--seeds", "0", "--data-root", str(tiny_data_root),
                         "--results", str(results), "--no-progress")  # fmt: skip
    assert run.returncode == 2 and "not medpeft-bench records" in flat(run.stderr), run.stderr
    assert fifo.is_fifo() and zero.is_symlink()


def test_oversized_file_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    padding = " " * (records_mod.MAX_RECORD_BYTES + 1)
    path.write_text(json.dumps(good_record())[:-1] + padding + "}")
    assert json.loads(path.read_text())["run_id"]  # valid JSON, just far too large
    assert read_record(path) is None
    assert load_records(tmp_path).unreadable == [path]


def test_deep_nesting_is_unreadable(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    deep = results / "deep.json"
    deep.write_text("[" * 200_000)
    nested = results / "nested.json"
    nested.write_text(
        '{"schema": 1, "run_id": "x", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    assert read_record(deep) is None and read_record(nested) is None
    res = report(results, tmp_path / "out", "--no-plots")
    assert res.exit_code == 0, res.output
    assert f"skipped {deep}: not a medpeft-bench record" in flat(res.output)
    status = bench("status", "--results", str(results))
    assert status.exit_code == 0 and f"{nested}: not a medpeft-bench record" in flat(status.output)


# ------------------------------------------------------------------ how files are written


def test_records_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a group-shared results folder
    try:
        path = write_record(tmp_path, good_record())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664


def test_write_atomic_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = write_atomic(tmp_path / "scores.md", "old table\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records_mod.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, "new table, cut short")
    assert path.read_text() == "old table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.md"]  # no temp file left


def test_report_figures_are_written_whole(tmp_path: Path, tiny_data_root, monkeypatch) -> None:
    """A report killed while saving a figure leaves the previous figure, not half of one."""
    import matplotlib.figure

    results = tmp_path / "results"
    for cell in cells(tiny_data_root, results, [0, 1]):
        write_record(results, record(cell))
    out = tmp_path / "out"
    assert report(results, out).exit_code == 0
    figures = {p: p.read_bytes() for p in (out / "figures").glob("*.png")}
    assert figures
    real = matplotlib.figure.Figure.savefig

    def dies_midway(self, target, *args, **kwargs):
        real(self, target, *args, **kwargs)
        # what a kill leaves of the file (or buffer) being written
        if hasattr(target, "truncate"):
            target.truncate(10)
        else:
            os.truncate(target, 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", dies_midway)
    killed = runner.invoke(app, ["report", "--results", str(results), "--out", str(out)])
    assert killed.exit_code != 0  # click turns the interrupt into "Aborted!"
    for path, data in figures.items():
        assert path.read_bytes() == data, path
    assert not [p for p in (out / "figures").iterdir() if p.name.endswith(".tmp")]


def test_long_dataset_name_reports(tmp_path: Path) -> None:
    results = tmp_path / "results"
    long_name = "a-very-long-dataset-name-" * 12  # 300 characters
    write_record(results, good_record(dataset=long_name))
    write_record(results, good_record("demo-linear-s1-0123456789ab", dataset=long_name, seed=1))
    res = report(results, tmp_path / "out")
    assert res.exit_code == 0, res.output
    names = [p.name for p in (tmp_path / "out" / "figures").iterdir()]
    assert names and max(len(n.encode()) for n in names) < 255


def test_card_name_is_bounded(tmp_path: Path, monkeypatch) -> None:
    from bench.catalog import MAX_CARD_NAME

    name = "x" * (MAX_CARD_NAME + 1)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / f"{name}.toml").write_text(
        f'name = "{name}"\ntitle = "t"\ntask = "binary"\nformat = "medmnist-npz"\n'
        'primary_metric = "auc"\nclasses = ["a", "b"]\n'
    )
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))  # the catalog is cached per folder list
    res = bench("list", "datasets")
    assert res.exit_code == 2, res.output
    assert f"name is {MAX_CARD_NAME + 1} characters; at most {MAX_CARD_NAME}" in flat(res.output)


# ------------------------------------------------------------------ one line, not a traceback


def test_report_out_is_a_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_record(results, good_record())
    out = tmp_path / "report.html"
    out.write_text("mine")
    res = report(results, out)
    assert res.exit_code == 2
    assert f"error: --out {out} exists and is not a folder" in flat(res.output)
    assert out.read_text() == "mine"


def test_unwritable_results_fail_before_work(tmp_path: Path, tiny_data_root, monkeypatch) -> None:
    """`.claims` a file, and a results folder that refuses writes (read-only, full): one
    `error:` line before any data is read or model built."""
    from bench.grid import inputs

    monkeypatch.setattr(inputs, "load_dataset", lambda *a, **k: pytest.fail("data was read"))
    results = tmp_path / "results"
    results.mkdir()
    (results / ".claims").write_text("not a folder")
    args = ("run", *GRID, "--data-root", str(tiny_data_root), "--results", str(results))
    res = bench(*args)
    assert res.exit_code == 2, res.output
    assert f"{results / '.claims'} is a file" in flat(res.output)
    (results / ".claims").unlink()

    real = Path.write_bytes

    def read_only(self: Path, data: bytes) -> int:
        if self.parent == results:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    res = bench(*args)
    assert res.exit_code == 2, res.output
    assert f"error: cannot write records in --results {results}: Read-only file system" in flat(
        res.output
    )
    assert list(results.iterdir()) == []


def test_results_folder_made_for_the_check_is_removed(tmp_path: Path, tiny_data_root) -> None:
    """Bad input found after the writability check leaves no folder behind."""
    results = tmp_path / "new" / "results"
    res = bench("run", *GRID, "--shots", "1000", "--data-root", str(tiny_data_root),
                "--results", str(results))  # fmt: skip
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "new").exists()


def test_full_disk_keeps_the_record(tmp_path: Path, tiny_data_root, monkeypatch) -> None:
    """The disk fills while a cell trains: its record goes to the temp folder, the grid stops
    with one `error:` line naming it, exit 1; a rerun after moving it back skips the cell."""
    import tempfile

    results = tmp_path / "results"
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    real = records_mod.write_atomic

    def full(path: Path, data):
        if path.parent == results:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(records_mod, "write_atomic", full)
    res = bench("run", *GRID, "--seeds", "0,1", "--data-root", str(tiny_data_root),
                "--results", str(results), "--no-progress")  # fmt: skip
    assert res.exit_code == 1, res.output
    (c0, c1) = cells(tiny_data_root, results, [0, 1])
    kept = spare / "medpeft-bench-unsaved" / f"{c0.run_id}.json"
    text = flat(res.output)
    assert (
        f"error: could not write {results / (c0.run_id + '.json')} (No space left on device)"
        in text
    )
    assert f"its content is saved in {kept}" in text
    saved = read_record(kept, run_id=c0.run_id)
    assert saved is not None and saved["status"] == "ok"
    assert not (results / f"{c1.run_id}.json").exists()  # the grid stopped
    monkeypatch.setattr(records_mod, "write_atomic", real)
    os.replace(kept, results / kept.name)
    again = bench("run", *GRID, "--seeds", "0,1", "--data-root", str(tiny_data_root),
                  "--results", str(results), "--no-progress")  # fmt: skip
    assert again.exit_code == 0 and "1 cell(s) run, 1 already done" in flat(again.output)


def test_list_with_a_bad_card_is_one_line(tmp_path: Path, monkeypatch) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "broken.toml").write_text("name = [unclosed")
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))  # the catalog is cached per folder list
    res = bench("list", "datasets")
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert res.output.startswith("error: dataset card") and "broken.toml" in res.output


@pytest.mark.parametrize("value", ["1_000", "٣", "1_0.5", "٣.٥"])
def test_set_numbers_are_ascii(tmp_path: Path, tiny_data_root: Path, value: str) -> None:
    key = "lora.rank" if "." not in value else "lora.lr"
    res = bench("run", "--dry-run", *GRID, "--methods", "lora", "--set", f"{key}={value}",
                "--data-root", str(tiny_data_root), "--results", str(tmp_path / "r"))  # fmt: skip
    assert res.exit_code == 2, res.output
    kind = "int" if key.endswith("rank") else "float"
    assert f"{key}={value!r}: expected a value of type {kind}" in res.output
