"""End to end through the CLI: records written, reruns skip, --force reruns, report renders,
bad input fails on one line before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.grid import GridRequest, plan
from bench.records import finished
from methods.registry import _REGISTRY, MethodSpec

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tiny_run(data_root: Path, results: Path, *extra: str):
    return bench(
        "run", "--methods", "full,linear", "--datasets", "pneumoniamnist", "--data-root", str(data_root),
        "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "2",
        "--batch-size", "16", "--results", str(results), "--no-progress", *extra,
    )  # fmt: skip


def planned(data_root: Path, results: Path, *, methods: list[str], **kw):
    req = GridRequest(methods=methods, datasets=["pneumoniamnist"], seeds=[0], backbone="test_vit",
                     pretrained=False, img_size=32, results=results, data_root=data_root, **kw)  # fmt: skip
    return plan(req, dry_run=True).cells


def records_in(results: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def test_version_prints_the_installed_version(monkeypatch) -> None:
    import importlib.metadata

    import bench as package

    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: {"medpeft-bench": "9.8.7"}[name]
    )
    out = bench("--version")
    assert (out.exit_code, out.output) == (0, "medpeft-bench 9.8.7\n")

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a bare checkout
    assert bench("--version").output == f"medpeft-bench {package.__version__}\n"


@pytest.mark.slow
def test_run_skip_force_report(tmp_path, tiny_data_root) -> None:
    results = tmp_path / "results"
    first = tiny_run(tiny_data_root, results, "--seeds", "0,1")
    assert first.exit_code == 0, first.output
    recs = records_in(results)
    assert len(recs) == 4
    for name, rec in recs.items():
        assert name == f"{rec['run_id']}.json"
        assert rec["status"] == "ok", rec.get("error")
        assert rec["config"]["method"] in ("full", "linear")
        assert 0.0 <= rec["metrics"]["test"]["accuracy"] <= 1.0
        assert rec["metrics"]["primary_metric"] == "auc"
        assert rec["training"]["best_epoch"] in (0, 1)
        assert rec["params"]["trainable_params"] > 0
        assert rec["cost"]["wall_s"] > 0 and rec["cost"]["memory"]["train"]["memory_source"]
        assert rec["env"]["torch_version"] and rec["demo"] is False
    linear = next(r for r in recs.values() if r["config"]["method"] == "linear")
    assert linear["params"]["trainable_params"] == 64 * 2 + 2  # test_vit width 64, 2 classes
    assert "4 cell(s) run" in first.output

    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    again = tiny_run(tiny_data_root, results, "--seeds", "0,1")
    assert again.exit_code == 0 and "0 cell(s) run, 4 already done" in again.output
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == mtimes

    forced = tiny_run(tiny_data_root, results, "--seeds", "0", "--force")
    assert forced.exit_code == 0 and "2 cell(s) run, 0 already done" in forced.output
    assert len(records_in(results)) == 4

    out = tmp_path / "reports"
    rep = bench("report", "--results", str(results), "--out", str(out))
    assert rep.exit_code == 0, rep.output
    summary = (out / "summary.md").read_text()
    assert "## pneumoniamnist" in summary and "| full" in summary and "| linear" in summary
    assert "2 ok" in summary
    # the self-contained page and the figures, including the reliability diagrams that the
    # records' calibration bins feed and the confusion matrices their saved predictions feed
    page = (out / "index.html").read_text()
    assert "pneumoniamnist · test_vit (random init)" in page and "data:image/png;base64" in page
    stems = {p.stem for p in (out / "figures").glob("*.png")}
    kinds = {stem.split("-", 1)[0] for stem in stems}
    assert kinds == {"score_vs_params", "score_vs_memory", "score_vs_train_flops", "train_time",
                     "reliability", "confusion"}  # fmt: skip
    assert len(pd.read_csv(out / "per_class.csv")) == 2 * 2  # 2 methods x 2 classes
    assert {p.stem for p in (out / "figures").glob("*.pdf")} == stems
    for name in ("scores", "efficiency"):
        assert {p.name for p in out.glob(f"{name}.*")} == {
            f"{name}.{x}" for x in ("md", "tex", "csv")
        }
    assert "\\toprule" in (out / "scores.tex").read_text()
    assert "## Against full over blocks: Wilcoxon signed-rank" in (out / "stats.md").read_text()
    assert "Holm-Bonferroni" in page and "PPT" in page


@pytest.mark.slow
def test_cpu_runs_are_deterministic(tmp_path, tiny_data_root) -> None:
    a = tiny_run(tiny_data_root, tmp_path / "a")
    b = tiny_run(tiny_data_root, tmp_path / "b")
    assert a.exit_code == b.exit_code == 0
    ra, rb = records_in(tmp_path / "a"), records_in(tmp_path / "b")
    assert ra.keys() == rb.keys()
    for name in ra:
        assert ra[name]["training"]["history"] == rb[name]["training"]["history"]
        assert ra[name]["metrics"]["test"] == rb[name]["metrics"]["test"]


def test_dry_run_writes_nothing(tmp_path, tiny_data_root) -> None:
    res = tiny_run(tiny_data_root, tmp_path / "results", "--dry-run", "--seeds", "0-2")
    assert res.exit_code == 0, res.output
    assert "6 cell(s)" in res.output and "to run" in res.output
    assert not (tmp_path / "results").exists()


def _register_temp(monkeypatch, name: str, build) -> None:
    spec = MethodSpec(name=name, build=build, hparams={}, optimizer="adamw", lr=1e-3, weight_decay=0.0,
                      summary="test-only", paper="")  # fmt: skip
    monkeypatch.setitem(_REGISTRY, name, spec)


class _Wrap(torch.nn.Module):
    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.fn(self.model(x))


def test_failing_and_diverging_cells_do_not_stop_the_grid(
    monkeypatch, tmp_path, tiny_data_root
) -> None:
    def boom(model):
        model.get_classifier().requires_grad_(True)

        def fn(out):
            if torch.is_grad_enabled():
                raise RuntimeError("kaboom in forward")
            return out

        return _Wrap(model, fn)

    def nan(model):
        model.get_classifier().requires_grad_(True)
        return _Wrap(model, lambda out: out * float("nan"))

    _register_temp(monkeypatch, "boom", boom)
    _register_temp(monkeypatch, "nan", nan)
    results = tmp_path / "results"
    res = bench(
        "run", "--methods", "boom,nan,linear", "--datasets", "pneumoniamnist", "--data-root", str(tiny_data_root),
        "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "1",
        "--results", str(results), "--no-progress",
    )  # fmt: skip
    # the grid ran to its end, and its exit status says it is not whole
    assert res.exit_code == 1, res.output
    assert "1 failed, 1 diverged cell(s): exit status 1" in " ".join(res.output.split())
    by_method = {r["config"]["method"]: r for r in records_in(results).values()}
    assert by_method["boom"]["status"] == "failed" and "kaboom" in by_method["boom"]["error"]
    assert by_method["nan"]["status"] == "diverged" and by_method["nan"]["diverged_step"] == 0
    assert by_method["linear"]["status"] == "ok"
    # failed cells are retried on rerun; diverged and ok ones are finished
    cells = planned(tiny_data_root, results, methods=["boom", "nan", "linear"], epochs=1)
    todo = [c.method for c in cells if finished(results, c.run_id) is None]
    assert todo == ["boom"]
    again = bench(
        "run", "--methods", "boom,nan,linear", "--datasets", "pneumoniamnist", "--data-root", str(tiny_data_root),
        "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "1",
        "--results", str(results), "--no-progress", "--allow-failures",
    )  # fmt: skip
    assert again.exit_code == 0, again.output  # boom failed again, and that is allowed
    assert "1 cell(s) run, 2 already done" in " ".join(again.output.split())


BAD_INPUT = [
    (["--methods", "full,vpt-nope"], "unknown method 'vpt-nope'; available: full, linear"),
    (["--datasets", "chestx"], "unknown dataset 'chestx'; available:"),
    (["--set", "linear.lr"], "malformed --set 'linear.lr'"),
    (["--set", "linear.rank=4"], "--set linear.rank: 'linear' has no hyperparameter 'rank'"),
    (["--set", "linear.lr=fast"], "linear.lr='fast': expected a value of type float"),
    (["--set", "full.lr=1e-3", "--methods", "linear"], "method 'full' is not in --methods"),
    (["--seeds", "0,x"], "--seeds '0,x'"),
    (["--seeds", "-1"], "--seeds '-1'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--backbone", "not_a_vit"], "unknown backbone 'not_a_vit'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_clear_line_before_training(
    tmp_path, tiny_data_root, args, message
) -> None:
    base = {
        "--methods": "full,linear",
        "--datasets": "pneumoniamnist",
        "--backbone": "test_vit",
        "--seeds": "0",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["run", "--data-root", str(tiny_data_root), "--no-pretrained", "--results", str(tmp_path / "r"),
            "--no-progress"]  # fmt: skip
    for flag, value in base.items():
        argv += [flag, value]
    res = bench(*argv)
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err
    assert not (tmp_path / "r").exists()


def test_unreadable_weights_file_cli(tmp_path, tiny_data_root) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"nonsense")
    res = bench("run", "--methods", "linear", "--datasets", "pneumoniamnist", "--data-root", str(tiny_data_root),
                "--backbone", "test_vit", "--weights", str(bad), "--results", str(tmp_path / "r"))  # fmt: skip
    assert res.exit_code == 2 and "cannot read weights file" in res.stderr
    assert not (tmp_path / "r").exists()


def test_foreign_file_is_never_overwritten(tmp_path, tiny_data_root) -> None:
    results = tmp_path / "results"
    (cell,) = planned(tiny_data_root, results, methods=["linear"], epochs=2, batch_size=16)
    run_id = cell.run_id
    results.mkdir()
    foreign = results / f"{run_id}.json"
    foreign.write_text('{"hello": "not yours"}')
    res = tiny_run(tiny_data_root, results, "--methods", "linear")
    assert res.exit_code == 2 and "not medpeft-bench records" in res.stderr
    assert foreign.read_text() == '{"hello": "not yours"}'


def test_list_shows_methods_datasets_backbones() -> None:
    res = bench("list")
    assert res.exit_code == 0
    for word in ("full", "linear", "demo", "pneumoniamnist", "demo-vit"):
        assert word in res.output


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from bench.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
