"""Run ids are the keys of users' results folders: a rerun skips a cell whose `<run id>.json`
exists, so an id that changes makes every finished cell run again and counts old records apart.
These ids were planned by the code of 2026-12-04 (before the harness redesign) through the
command line, which stays; any refactor of planning must reproduce them exactly. Never update
`run_ids_pinned.json` to make this test pass: change the code so the ids stay.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import methods
from bench.cli import app

PINNED = Path(__file__).with_name("run_ids_pinned.json")
# Methods registered after the ids were pinned (`core` and `all` plan them too)
ADDED_AFTER_PIN = ("knn",)
RUN_ID = re.compile(r"\b[a-z0-9][a-z0-9_.-]*-s\d+-[0-9a-f]{12}\b")
TINY = ["--datasets", "pneumoniamnist", "--backbone", "test_vit", "--no-pretrained",
        "--device", "cpu"]  # fmt: skip
# name -> the `bench` arguments whose dry run lists the cells (trials, for a search)
SCENARIOS: dict[str, list[str]] = {
    "default demo grid": ["run", "--device", "cpu"],
    "every method, two seeds": ["run", "--methods", "all", *TINY, "--seeds", "0,1"],
    "few-shot": ["run", "--methods", "core", *TINY, "--shots", "1,5", "--split-seeds", "0,1"],
    "options": ["run", "--methods", "lora,vpt,linear,fpt", *TINY, "--set", "lora.rank=4",
                "--set", "vpt.prompt_length=5", "--lr", "0.01", "--batch-size", "16",
                "--epochs", "2", "--augment", "none", "--img-size", "32",
                "--warmup-epochs", "0.5", "--grad-clip", "0", "--precision", "fp32"],
    "search trials": ["tune", "--methods", "linear,vpt,lora", *TINY, "--budget", "3"],
    "halving trials": ["tune", "--methods", "lora", *TINY, "--budget", "4", "--scheduler",
                       "halving", "--eta", "2", "--epochs", "4"],
}  # fmt: skip


def planned_ids(args: list[str], data_root: Path, results: Path) -> list[str]:
    res = CliRunner().invoke(
        app,
        [*args, "--dry-run", "--data-root", str(data_root), "--results", str(results)],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 0, res.output
    return sorted(set(RUN_ID.findall(res.output)))


def collect(data_root: Path, results: Path) -> dict[str, list[str]]:
    return {name: planned_ids(args, data_root, results) for name, args in SCENARIOS.items()}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_run_ids_are_those_of_older_results_folders(name: str, tiny_data_root, tmp_path) -> None:
    pinned = json.loads(PINNED.read_text())[name]
    unavailable = set(methods.list_methods(include_unavailable=True)) - set(methods.list_methods())
    if "--methods" in SCENARIOS[name] and "all" in SCENARIOS[name] and unavailable:
        # `all` is what this install has: an older peft lacks some tuners (CI's floors run)
        pinned = [i for i in pinned if not any(f"-{m}-s" in i for m in unavailable)]
    got = planned_ids(SCENARIOS[name], tiny_data_root, tmp_path / "results")
    # a method registered after the pin adds cells of its own; every pinned id must stay
    got = [i for i in got if not any(f"-{m}-s" in i for m in ADDED_AFTER_PIN)]
    assert len(got) == len(pinned) > 0
    assert got == pinned, {
        "new": sorted(set(got) - set(pinned)),
        "lost": sorted(set(pinned) - set(got)),
    }
