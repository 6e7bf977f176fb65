"""The command line a study needs: a TOML grid file (--config) that plans exactly what the flags
plan, a user's own --protocol file, --json documents, shell completion, choices click checks,
and help that keeps its bracketed text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.cli.complete import comma_items, complete_datasets, complete_methods
from bench.grid import GridRequest, plan
from bench.records import write_record

runner = CliRunner()

TINY = ["--datasets", "pneumoniamnist", "--backbone", "test_vit", "--no-pretrained",
        "--img-size", "32", "--batch-size", "16"]  # fmt: skip
# the same grid as TINY + the flags of test_grid_file_plans_the_cells_of_the_flags, as a file
TINY_TOML = """\
methods = ["full", "linear"]
datasets = "pneumoniamnist"
backbone = "test_vit"
no-pretrained = true
img_size = 32
batch_size = 16
epochs = 2
seeds = [0, 1]
set = {linear = {lr = 0.02}}
"""


def bench(*args: str, **kw):
    return runner.invoke(app, list(args), catch_exceptions=False, **kw)


def flat(text: str) -> str:
    """Output with rich's box drawing and line breaks gone: a message wrapped in a panel reads
    as one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def dry_json(*args: str) -> dict:
    res = bench("run", *args, "--dry-run", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # stdout holds the document and nothing else


def one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------- --config


def test_grid_file_plans_the_cells_of_the_flags(tmp_path, tiny_data_root, monkeypatch) -> None:
    study = tmp_path / "study"
    study.mkdir()
    cfg = study / "grid.toml"
    cfg.write_text(TINY_TOML + f'data_root = "{tiny_data_root}"\nresults = "out"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths in the file are relative to the file
    from_file = dry_json("--config", str(cfg))
    from_flags = dry_json(*TINY, "--methods", "full,linear", "--epochs", "2", "--seeds", "0-1",
                          "--set", "linear.lr=0.02", "--data-root", str(tiny_data_root),
                          "--results", str(study / "out"))  # fmt: skip
    assert from_file == from_flags
    assert from_file["results"] == str(study / "out")
    cells = from_file["cells"]
    assert len(cells) == 4 and {c["seed"] for c in cells} == {0, 1}
    assert {c["lr"] for c in cells if c["method"] == "linear"} == {0.02}
    # the run ids are those the plan API gives (the values reaching it are plain strings)
    req = GridRequest(methods=["full", "linear"], datasets=["pneumoniamnist"], seeds=[0, 1],
                      backbone="test_vit", pretrained=False, img_size=32, batch_size=16,
                      epochs=2, sets={"linear": {"lr": "0.02"}}, data_root=tiny_data_root)  # fmt: skip
    assert [c["run_id"] for c in cells] == [c.run_id for c in plan(req, dry_run=True).cells]


def test_a_flag_given_wins_over_the_file(tmp_path, tiny_data_root) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(TINY_TOML + f'data_root = "{tiny_data_root}"\n')
    doc = dry_json("--config", str(cfg), "--seeds", "5", "--epochs", "3", "--methods", "linear")
    assert [(c["method"], c["seed"], c["epochs"]) for c in doc["cells"]] == [("linear", 5, 3)]
    assert doc["cells"][0]["lr"] == 0.02  # the file's other keys still apply


@pytest.mark.parametrize(("toml", "message"), [
    ('metods = "full"', "unknown key 'metods' (did you mean 'methods'?); valid keys: allow_failures, artefacts, augment,"),
    ("batch_size = \"big\"", "batch_size must be an integer, got str 'big'"),
    ("lr = true", "lr must be a number, got bool True"),
    ('precision = "fp8"', "precision must be one of 'auto', "),
    ("set = 3", 'set must be a list of "METHOD.KEY=VALUE" strings or a table'),
    ("seeds = [0.5]", "seeds must be a list, or a comma-separated string"),
    ("results = 3", "results must be a path (a string; relative to this file)"),
    ("methods = [", "give a readable TOML file"),
    ("zzz = 1", "unknown key 'zzz'; valid keys: allow_failures,"),
])  # fmt: skip
def test_bad_grid_files_fail_on_one_line(tmp_path, toml, message) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(toml + "\n")
    results = tmp_path / "r"
    res = bench("run", "--config", str(cfg), "--results", str(results), "--dry-run")
    assert message in one_line_error(res)
    assert not results.exists()


def test_file_values_meet_the_checks_of_the_flags(tmp_path) -> None:
    """No second validation path: a value the flag check refuses, the file's is refused alike."""
    cfg = tmp_path / "grid.toml"
    cfg.write_text('seeds = "0-x"\n')
    from_file = one_line_error(bench("run", "--config", str(cfg), "--dry-run"))
    from_flag = one_line_error(bench("run", "--seeds", "0-x", "--dry-run"))
    assert from_file == from_flag and "--seeds" in from_file
    cfg.write_text("budget = 4\n")  # a search option without --tune, as the flag would be
    assert "--budget configure the search" in one_line_error(bench("run", "--config", str(cfg)))


def test_status_reads_the_grid_file(tmp_path, tiny_data_root) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(TINY_TOML + f'data_root = "{tiny_data_root}"\nresults = "r"\n')
    res = bench("status", "--config", str(cfg), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["grid"] is True and doc["results"] == str(tmp_path / "r")
    assert doc["total"] == {"done": 0, "failed": 0, "oom": 0, "diverged": 0, "running": 0,
                            "missing": 4, "cells": 4}  # fmt: skip


def test_own_protocol_file(tmp_path, tiny_data_root, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("my.toml").write_text(
        'name = "my"\ntitle = "My study"\npaper_csv = "my.csv"\nbackbone = "test_vit"\n'
        'img_size = 32\nepochs = 1\nbatch_size = 16\naugment = "rrc-flip"\n'
        'datasets = ["pneumoniamnist"]\nmethods = ["linear", "bitfit"]\nseeds = [0, 1]\n'
    )
    base = ("--data-root", str(tiny_data_root), "--no-pretrained")
    doc = dry_json("--protocol", "./my.toml", *base)
    got = {(c["method"], c["seed"], c["epochs"], c["img_size"]) for c in doc["cells"]}
    assert got == {(m, s, 1, 32) for m in ("linear", "bitfit") for s in (0, 1)}
    # from a grid file, the protocol path is relative to the file too
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "grid.toml").write_text('protocol = "../my.toml"\n')
    monkeypatch.chdir(tmp_path / "sub")
    assert dry_json("--config", "grid.toml", *base)["cells"] == doc["cells"]
    # a grid option in the file clashes with --protocol as the flag does
    (tmp_path / "sub" / "grid.toml").write_text('protocol = "../my.toml"\nmethods = "full"\n')
    err = one_line_error(bench("run", "--config", "grid.toml", *base, "--dry-run"))
    assert "sets the grid; drop --methods" in err
    # checked as a shipped protocol is; a missing file says what to give
    Path(tmp_path / "bad.toml").write_text('name = "bad"\n')
    assert "missing key(s)" in one_line_error(bench("run", "--protocol", "../bad.toml"))
    err = one_line_error(bench("run", "--protocol", "nope.toml"))
    assert "no such protocol file" in err and "fptplus" in err


# --------------------------------------------------------------------------------- --json


def test_dry_run_json_keys(tmp_path, tiny_data_root) -> None:
    doc = dry_json(*TINY, "--methods", "linear", "--data-root", str(tiny_data_root),
                   "--results", str(tmp_path / "r"))  # fmt: skip
    assert set(doc) == {"cells", "backbone", "pretrained", "device", "results", "notes",
                        "compute"}  # fmt: skip
    cell = doc["cells"][0]
    assert set(cell) == {"run_id", "method", "dataset", "shots", "split_seed", "seed", "epochs",
                         "lr", "img_size", "hparams", "state", "config"}  # fmt: skip
    assert (cell["state"], doc["backbone"], doc["pretrained"]) == ("to run", "test_vit", False)
    compute = doc["compute"]
    assert set(compute) == {"cells", "training_images", "unknown_size_cells"}
    text = bench("run", *TINY, "--methods", "linear", "--data-root", str(tiny_data_root),
                 "--results", str(tmp_path / "r"), "--dry-run", "--no-progress",
                 env={"COLUMNS": "300"}).output  # fmt: skip
    assert f"compute: 1 cell(s), {compute['training_images']:,} training images" in flat(text)
    assert cell["run_id"] in text  # the same plan as the table
    assert not (tmp_path / "r").exists()
    err = one_line_error(bench("run", "--json", "--results", str(tmp_path / "r")))
    assert "--json prints the plan: add --dry-run" in err


def test_tune_dry_run_json_keys(tmp_path, tiny_data_root) -> None:
    cfg = tmp_path / "search.toml"
    cfg.write_text('methods = "linear"\nbudget = 2\nscheduler = "none"\n')  # tune keys too
    res = bench("tune", "--config", str(cfg), *TINY, "--epochs", "1",
                "--data-root", str(tiny_data_root), "--results", str(tmp_path / "r"),
                "--dry-run", "--json", "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {"budget", "tune_seed", "scheduler", "searches", "trials", "final_seeds",
            "final_cells", "results", "notes"} <= set(doc)  # fmt: skip
    assert doc["budget"] == 2 and len(doc["trials"]) == 2 and doc["final_cells"] == 1
    assert doc["searches"][0]["trials"] == 2 and "lr" in doc["searches"][0]["axes"]


def test_status_json(tmp_path, tiny_data_root) -> None:
    results = tmp_path / "r"
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0, 1],
                      backbone="test_vit", pretrained=False, img_size=32, batch_size=16,
                      data_root=tiny_data_root)  # fmt: skip
    done = plan(req, dry_run=True).cells[0]
    write_record(results, {"schema": 1, "run_id": done.run_id, "status": "ok", "error": None,
                           "config": done.to_dict()})  # fmt: skip
    (results / "notes.json").write_text('{"hello": "not a record"}')
    grid = [*TINY, "--methods", "linear", "--seeds", "0-1", "--data-root", str(tiny_data_root)]
    res = bench("status", "--results", str(results), *grid, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) == {"results", "grid", "counts", "total", "cells", "stale_claims", "skipped"}
    assert doc["grid"] is True and doc["total"]["done"] == 1 and doc["total"]["missing"] == 1
    assert doc["counts"] == [{"dataset": "pneumoniamnist", "method": "linear", "done": 1,
                              "failed": 0, "oom": 0, "diverged": 0, "running": 0, "missing": 1,
                              "total": 2}]  # fmt: skip
    assert sorted(c["state"] for c in doc["cells"]) == ["done", "missing"]
    assert [s["path"] for s in doc["skipped"]] == [str(results / "notes.json")]
    # without grid options: what the folder holds (no "missing" state)
    folder = json.loads(bench("status", "--results", str(results), "--json").stdout)
    assert folder["grid"] is False and "missing" not in folder["total"]
    assert [c["state"] for c in folder["cells"]] == ["done"]


def test_list_json_has_every_kind(monkeypatch) -> None:
    from bench import method_counts

    # building every method for its count takes long; the counts have their own tests
    counts = lambda names, **kw: {n: f"{len(n)} (1 %)" for n in names}  # noqa: E731
    monkeypatch.setattr(method_counts, "trainable_counts", counts)
    res = bench("list", "--json", "--backbone", "test_vit")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert list(doc) == ["methods", "spaces", "datasets", "augmentations", "protocols",
                         "backbones"]  # fmt: skip
    methods = {m["name"]: m for m in doc["methods"]}
    assert methods["linear"]["core"] is True and methods["linear"]["trainable"] == "6 (1 %)"
    assert {"name", "optimizer", "lr", "weight_decay", "hparams", "available"} <= set(
        methods["linear"]
    )
    assert "pneumoniamnist" in {d["name"] for d in doc["datasets"]}
    assert any(a["default"] for a in doc["augmentations"])
    assert "fptplus" in {p["name"] for p in doc["protocols"]}
    assert {"method", "optimizer", "size", "lr"} <= set(doc["spaces"][0])
    only = json.loads(bench("list", "datasets", "--json").stdout)
    assert list(only) == ["datasets"] and only["datasets"] == doc["datasets"]


# ----------------------------------------------------------------------------- completion


def test_show_completion_prints_a_script() -> None:
    res = bench("--show-completion", "bash")
    assert res.exit_code == 0, res.output
    assert "_BENCH_COMPLETE=complete_bash" in res.output and "complete " in res.output


def test_names_complete_from_catalog_and_registry() -> None:
    assert "pneumoniamnist" in complete_datasets("pneum")
    assert all(n.startswith("pneum") for n in complete_datasets("pneum"))
    assert complete_methods("linea") == ["linear"]
    assert {"core", "all"} <= set(complete_methods(""))
    assert comma_items("full,li", ["full", "linear", "lora"]) == ["full,linear"]
    assert comma_items("full,", ["full", "linear"]) == ["full,linear"]  # no name twice


@pytest.mark.parametrize(("words", "expected"), [
    ("bench run --datasets pneumo", "pneumoniamnist"),
    ("bench status --datasets demo,pneumo", "demo,pneumoniamnist"),
    ("bench data info pneumo", "pneumoniamnist"),
    ("bench tune --methods full,lin", "full,linear"),
    ("bench profile --methods lin", "linear"),
])  # fmt: skip
def test_the_shell_gets_names(words, expected) -> None:
    """Through click's completion protocol, as the installed bash script calls it."""
    env = {"_BENCH_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
    res = runner.invoke(app, [], env=env, prog_name="bench")
    assert expected in res.output.split(), res.output


# -------------------------------------------------------------------------------- choices


@pytest.mark.parametrize(("option", "bad", "valid"), [
    ("--precision", "fp8", "PRECISIONS"),
    ("--device", "tpu", "DEVICES"),
])  # fmt: skip
def test_click_refuses_a_bad_choice_listing_the_valid(option, bad, valid, tmp_path) -> None:
    import bench.option_values as values

    res = bench("run", option, bad, "--results", str(tmp_path / "r"))
    assert res.exit_code == 2
    text = flat(res.output)
    listed = ", ".join(repr(v) for v in getattr(values, valid))
    assert f"Invalid value for '{option}'" in text and listed in text, text
    assert not (tmp_path / "r").exists()


def test_other_choices_are_refused_too() -> None:
    for args, listed in ((["--launcher", "mpi"], "'local', 'subprocess', 'slurm'"),
                         (["--slurm-cluster", "moon"], "'slurm', 'local'"),
                         (["--scheduler", "asha"], "'none', 'halving'")):  # fmt: skip
        res = bench("run", *args)
        assert res.exit_code == 2 and listed in flat(res.output), res.output
    res = bench("status", "--device", "tpu")
    assert res.exit_code == 2 and "'auto', 'cpu', 'cuda'" in flat(res.output)


# ------------------------------------------------------------------------------------ help


def option_help(text: str, option: str) -> str:
    """The help of one option in rich's help panel: its row and the rows it wraps onto."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {option} "))
    # the next option's row starts at the panel's edge; a wrapped row is indented
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("│     "))
    return " ".join(" ".join(line.strip("│ ") for line in lines[start:end]).split())


def test_help_keeps_its_brackets() -> None:
    res = bench("run", "--help", env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "'slurm' [default], or 'local'" in option_help(res.output, "--slurm-cluster")
    assert "[8]" in option_help(res.output, "--budget")
    assert "[1; 0 with --device cpu]" in option_help(res.output, "--gpus-per-job")
    assert "[none]" in option_help(res.output, "--scheduler")
    assert "[additional]" in option_help(res.output, "--slurm-config")
    assert "auto|" in option_help(res.output, "--precision")  # the choices, in the help
    for panel in ("Grid", "Training", "Tuning", "Launch", "Output"):
        assert f"╭─ {panel} " in res.output
    report = bench("report", "--help", env={"COLUMNS": "200"}).output
    assert "[default: full, else linear]" in flat(report)
