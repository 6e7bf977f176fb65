"""Memory per cell that separates methods (group `cell-memory`).

`bench run` runs its cells one after another in one process. Each record's training memory
(`cost.memory.train.own_mb`, bench.measure.memory) must be that cell's own, not the process's
high-water mark that an earlier, larger cell left: so the grid runs full fine-tuning FIRST and the
parameter-efficient methods after it, where a leftover would show. Prints the figures; asserts
the order a user relies on (the linear probe and LoRA use less memory than full fine-tuning) on
the built-in demo and on ViT-S/16 at 224 px, batch 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from tests.conftest import write_medmnist_npz

ORDER = ["full", "linear", "lora"]  # the largest first: its leftovers must not count later


def _train_memory(results: Path) -> dict[str, float]:
    out = {}
    for path in results.rglob("*.json"):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            out[record["config"]["method"]] = record["cost"]["memory"]["train"]["own_mb"]
    return out


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["run", "--methods", ",".join(ORDER), "--no-progress", *args])
    assert res.exit_code == 0, res.output


def _check(name: str, memory: dict[str, float], benchmark) -> None:
    print(f"\n{name}: training memory per cell (MB, run in the order {ORDER}):")
    for method in ORDER:
        print(f"  {method:7s} {memory[method]:8.1f}")
    benchmark.extra_info.update({f"{name}_{m}_mb": v for m, v in memory.items()})
    assert memory["linear"] < memory["full"]
    assert memory["lora"] < memory["full"]


@pytest.mark.slow
def test_demo_cells_memory(tmp_path: Path, benchmark) -> None:
    results = tmp_path / "results"
    benchmark.group = "cell-memory"
    benchmark.pedantic(_run, args=(["--epochs", "1", "--results", str(results)],), rounds=1)
    _check("demo", _train_memory(results), benchmark)


@pytest.mark.slow
def test_vit_small_224_cells_memory(tmp_path: Path, benchmark) -> None:
    root = tmp_path / "data"
    root.mkdir()
    write_medmnist_npz(root / "pneumoniamnist.npz", n=(64, 32, 32))
    results = tmp_path / "results"
    args = ["--datasets", "pneumoniamnist", "--data-root", str(root), "--backbone",
            "vit_small_patch16_224", "--no-pretrained", "--img-size", "224", "--batch-size", "32",
            "--epochs", "1", "--results", str(results)]  # fmt: skip
    benchmark.group = "cell-memory"
    benchmark.pedantic(_run, args=(args,), rounds=1)
    _check("vit_small_patch16_224", _train_memory(results), benchmark)
