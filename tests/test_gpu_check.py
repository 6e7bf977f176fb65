"""The GPU check script (benchmarks/gpu_check.sh) at its small CPU sizes, so it cannot rot while
no GPU runs it: every core method is profiled, FPT+ is compared with full fine-tuning, the harness
with a bare loop, and one table comes out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from methods import CORE_METHODS, get_method
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["rows"]
    costs = {r["method"] for r in rows if r["section"] == "costs" and r["status"] == "ok"}
    assert costs == {get_method(m).name for m in CORE_METHODS if not get_method(m).training_free}
    fpt = [r for r in rows if r["section"] == "fpt-memory"]
    assert [r["method"] for r in fpt] == ["fpt-plus", "full"]
    assert "% of full's training memory" in fpt[0]["note"]
    assert fpt[0]["train MB"] < fpt[1]["train MB"]
    assert {r["method"] for r in rows if r["section"] == "overhead"} == {
        "full (harness fit)", "full (bare loop)"}  # fmt: skip
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| section" in table and "overhead: harness" in table
