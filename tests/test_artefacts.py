"""What each finished cell trained, kept beside its record (bench/artefacts.py) and rebuilt
(bench/export.py, `bench export`): real tiny cells of several methods (a head on cached features,
full fine-tuning, deep prompts, LoRA through peft, EPT, FPT+ on cached LPM features), rebuilt
from their records, give the very test logits their predictions file holds; the file holds the
trainable tensors and nothing else; peft's adapter folder loads with PeftModel.from_pretrained;
failed cells, trials and --no-artefacts keep nothing; a damaged artefact or unknown run id is a
one-line error."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import bench.artefacts
import bench.harness
from bench.artefacts import (
    PENDING,
    adapter_path,
    save_adapter,
    save_tensors,
    trainable_path,
    trained,
    write_folder_atomic,
)
from bench.backbones import create_backbone, resolve_backbone
from bench.cli import app
from bench.config import CellConfig
from bench.errors import UserError
from bench.execute import run_grid
from bench.export import export_run, load_adapted, load_export, rebuild
from bench.grid import GridRequest, data_key, plan
from bench.harness import build_model, run_cell
from bench.records import read_record, record_path, remove_stale_temp
from methods import get_method, list_methods
from methods.peft_inject import merge_peft
from tests.conftest import skip_if_unavailable, write_medmnist_npz

# Two epochs: the selected epoch's weights, not necessarily the last, gave the test logits.
METHODS = ("linear", "full", "vpt", "lora", "ept", "fpt-plus")


def write_weights(path: Path) -> Path:
    """'Pretrained' test_vit weights in a local file (random, seeded): a weights sha256 to check."""
    torch.manual_seed(123)
    model = timm.create_model("test_vit", pretrained=False, img_size=32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def request(root: Path, methods, **kw) -> GridRequest:
    settings = dict(datasets=["pneumoniamnist"], seeds=[0], backbone="test_vit",
                    weights=str(root / "weights.safetensors"), img_size=32, epochs=2,
                    batch_size=16, device="cpu", augment="none", results=root / "results",
                    data_root=root / "data")  # fmt: skip
    return GridRequest(methods=list(methods), **{**settings, **kw})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("art")
    (root / "data").mkdir()
    write_medmnist_npz(root / "data" / "pneumoniamnist.npz")
    write_weights(root / "weights.safetensors")
    return root


@pytest.fixture(scope="module")
def grid(root: Path):
    """One real tiny cell per method in METHODS, run through the grid: (plan, request)."""
    req = request(root, METHODS)
    the_plan = plan(req, progress=False)
    out = run_grid(the_plan, req)
    bad = [(r["run_id"], r.get("traceback")) for r in out.records if r["status"] != "ok"]
    assert out.ran == len(METHODS) and not bad, bad
    return the_plan, req


def cell_of(the_plan, method: str):
    return next(c for c in the_plan.cells if c.method == method)


def recorded_test(req: GridRequest, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(req.results / f"{run_id}.predictions.npz") as npz:
        return npz["test_logits"], npz["test_labels"]


def images_of(the_plan, cell) -> torch.Tensor:
    return the_plan.datasets[data_key(cell)].splits["test"].images


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_rebuilt_model_gives_the_recorded_test_logits(grid, method: str) -> None:
    the_plan, req = grid
    cell = cell_of(the_plan, method)
    built = rebuild(cell.run_id, req.results)
    with torch.no_grad():
        logits = built.model(built.preprocess.evaluation(images_of(the_plan, cell)))
    np.testing.assert_allclose(logits.numpy(), recorded_test(req, cell.run_id)[0], atol=1e-5)
    # the same through the plain API
    again = load_adapted(cell.run_id, req.results)
    assert not again.training
    with torch.no_grad():
        same = again(built.preprocess.evaluation(images_of(the_plan, cell)))
    torch.testing.assert_close(same, logits)


@pytest.mark.parametrize("method", METHODS)
def test_the_file_holds_exactly_the_trainable_tensors(grid, method: str) -> None:
    the_plan, req = grid
    cell = cell_of(the_plan, method)
    record = read_record(record_path(req.results, cell.run_id))
    path = trainable_path(req.results, cell.run_id)
    entry = record["artefacts"]
    assert entry["trainable"] == {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    tensors = load_file(str(path))
    # an independent build of the same cell says which tensors train
    model = build_model(cell, the_plan.source, record["dataset"]["num_classes"])[0]
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(tensors) == names and entry["tensors"] == len(names)
    count = sum(t.numel() for t in tensors.values())
    assert count == entry["params"] == record["params"]["trainable_params"]
    assert entry["frozen"] == "pretrained"
    assert ("adapter" in entry) == (method == "lora")  # peft methods only
    if method != "full":
        assert count < sum(p.numel() for p in model.parameters())


def test_the_selected_epoch_is_what_was_saved(grid) -> None:
    """The run's saved tensors are the selected epoch's: the trained model itself would give the
    same logits only then (fit restores the best epoch before testing)."""
    the_plan, req = grid
    cell = cell_of(the_plan, "full")
    record = read_record(record_path(req.results, cell.run_id))
    built = rebuild(cell.run_id, req.results)
    with torch.no_grad():
        x = built.preprocess.evaluation(the_plan.datasets[data_key(cell)].splits["val"].images)
        val = built.model(x)
    with np.load(req.results / f"{cell.run_id}.predictions.npz") as npz:
        np.testing.assert_allclose(val.numpy(), npz["val_logits"], atol=1e-5)
    assert record["training"]["epochs"] == 2


def test_the_peft_adapter_loads_with_peft_onto_a_fresh_backbone(grid) -> None:
    the_plan, req = grid
    cell = cell_of(the_plan, "lora")
    record = read_record(record_path(req.results, cell.run_id))
    folder = adapter_path(req.results, cell.run_id)
    names = {f["file"] for f in record["artefacts"]["adapter"]["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert record["artefacts"]["adapter"]["folder"] == folder.name
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == ["head"]
    base = create_backbone(the_plan.source, num_classes=2, img_size=cell.img_size)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    prep = rebuild(cell.run_id, req.results).preprocess
    with torch.no_grad():
        logits = model(prep.evaluation(images_of(the_plan, cell)))
    np.testing.assert_allclose(logits.numpy(), recorded_test(req, cell.run_id)[0], atol=1e-5)


PEFT_METHODS = [m for m in list_methods(include_unavailable=True)
                if get_method(m, include_unavailable=True).merge is merge_peft]  # fmt: skip


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_every_peft_method_saves_an_adapter_that_peft_loads(tmp_path: Path, method: str) -> None:
    """Every peft-backed method (injected without a PeftModel): its adapter folder, loaded by
    PeftModel.from_pretrained onto the same backbone, computes what the trained model does."""
    skip_if_unavailable(method)
    source = resolve_backbone("test_vit", pretrained=False, weights=None)
    spec = get_method(method)
    cell = CellConfig(method=method, dataset="demo", seed=0, backbone="test_vit",
                      pretrained=False, weights=None, weights_sha256=None, epochs=1,
                      batch_size=2, img_size=32, device="cpu", precision="fp32",
                      optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                      grad_clip=0.0, hparams=dict(spec.hparams))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cell, source, 3)[0]
    with torch.no_grad():  # as if trained: every trainable tensor away from its init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    entry = save_adapter(trained(model, cell, source, 3), tmp_path / "adapter")
    assert entry["folder"] == "adapter"
    torch.manual_seed(0)  # the same random init the trained model's frozen part has
    base = create_backbone(source, num_classes=3, img_size=32)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "fpt-plus"])
def test_bench_export_writes_a_self_contained_model(grid, tmp_path: Path, method: str) -> None:
    the_plan, req = grid
    cell = cell_of(the_plan, method)
    out = tmp_path / "export"
    result = CliRunner().invoke(
        app, ["export", cell.run_id, "--results", str(req.results), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "model.json").read_text())
    assert spec["run_id"] == cell.run_id and spec["method"] == method
    assert spec["adapter"] == ("adapter" if method == "lora" else None)
    assert (out / "adapter" / "adapter_model.safetensors").is_file() == (method == "lora")
    # no results folder, no weights file: the export alone rebuilds the model
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    model = load_export(moved)
    x = rebuild(cell.run_id, req.results).preprocess.evaluation(images_of(the_plan, cell))
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_allclose(logits.numpy(), recorded_test(req, cell.run_id)[0], atol=1e-5)
    # exporting again replaces the folder whole
    assert export_run(cell.run_id, req.results, out) == out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_refuses_a_folder_that_is_not_an_export(grid, tmp_path: Path) -> None:
    the_plan, req = grid
    (tmp_path / "mine.txt").write_text("user file")
    with pytest.raises(UserError, match="not an export; choose another --out"):
        export_run(cell_of(the_plan, "linear").run_id, req.results, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "user file"
    run_id = cell_of(the_plan, "linear").run_id
    argv = ["export", run_id, "--results", str(req.results), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and "not an export; choose another --out" in result.output
    assert (tmp_path / "mine.txt").read_text() == "user file"


# ---------------------------------------------------------------- damaged or missing artefacts


@pytest.fixture
def copy_of(grid, tmp_path: Path):
    """A copy of the grid's results folder holding one method's run, and that run id."""
    the_plan, req = grid

    def copy(method: str) -> tuple[Path, str]:
        run_id = cell_of(the_plan, method).run_id
        results = tmp_path / "results"
        results.mkdir()
        for path in req.results.glob(f"{run_id}*"):
            if path.is_file():
                shutil.copy(path, results / path.name)
        return results, run_id

    return copy


def test_a_tampered_artefact_is_refused(copy_of) -> None:
    results, run_id = copy_of("linear")
    path = trainable_path(results, run_id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"not the file its record names \(sha256 differs\)"):
        load_adapted(run_id, results)


def test_a_missing_artefact_is_refused(copy_of) -> None:
    results, run_id = copy_of("linear")
    trainable_path(results, run_id).unlink()
    with pytest.raises(UserError, match=r"trainable\.safetensors is missing; rerun its cell"):
        load_adapted(run_id, results)


def test_tensors_that_do_not_fit_the_model_are_refused(copy_of) -> None:
    """The loading is strict: an extra tensor, a missing one or another shape is an error, even
    when the file is the one its record names."""
    results, run_id = copy_of("linear")
    path = trainable_path(results, run_id)
    good = load_file(str(path))
    cases = {
        "does not train: extra": {**good, "extra": torch.zeros(1)},
        "lacks head.bias": {k: v for k, v in good.items() if k != "head.bias"},
        "other shapes for head.weight": {**good, "head.weight": torch.zeros(5, 3)},
    }
    for message, tensors in cases.items():
        record = read_record(record_path(results, run_id))
        record["artefacts"]["trainable"] = save_tensors(path, tensors)
        record_path(results, run_id).write_text(json.dumps(record))
        with pytest.raises(UserError, match=message):
            load_adapted(run_id, results)


def test_other_weights_than_the_run_used_are_refused(grid, tmp_path: Path) -> None:
    the_plan, req = grid
    other = tmp_path / "other.safetensors"
    model = timm.create_model("test_vit", pretrained=False, img_size=32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(other))
    with pytest.raises(UserError, match=r"not the ones run .* trained on \(sha256"):
        rebuild(cell_of(the_plan, "linear").run_id, req.results, weights=other)


def test_an_unknown_run_id_is_one_line_saying_how_to_find_ids(grid) -> None:
    the_plan, req = grid
    run_id = cell_of(the_plan, "linear").run_id
    result = CliRunner().invoke(app, ["export", run_id[:-1] + "x", "--results", str(req.results)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: no record of run")
    assert "bench status" in line and run_id in line  # the close match is suggested


# ---------------------------------------------------------------- cells that keep nothing


def test_a_failed_cell_keeps_no_artefact(root: Path, tmp_path: Path, monkeypatch) -> None:
    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench.harness, "fit", broken_fit)
    req = request(root, ["lora"], results=tmp_path / "results", epochs=1)
    out = run_grid(plan(req, progress=False), req)
    (record,) = out.records
    assert record["status"] == "failed" and "artefacts" not in record
    assert not list(req.results.glob("*.safetensors")) and not list(req.results.glob("*.adapter"))
    with pytest.raises(UserError, match="is 'failed', not ok"):
        load_adapted(record["run_id"], req.results)


def test_a_trial_keeps_nothing(grid) -> None:
    the_plan, _ = grid
    cell = dataclasses.replace(cell_of(the_plan, "linear"), epochs=1, tuning={"role": "trial"})
    out = run_cell(cell, the_plan.datasets[data_key(cell)], the_plan.source)
    assert out["status"] == "trial" and PENDING not in out


def test_no_artefacts_writes_none_and_keeps_the_run_id(root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["run", "--methods", "lora", "--datasets", "pneumoniamnist", "--data-root",
            str(root / "data"), "--backbone", "test_vit", "--weights",
            str(root / "weights.safetensors"), "--img-size", "32", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu", "--augment", "none", "--results",
            str(results), "--no-progress", "--no-artefacts"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (path,) = results.glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    assert record["artefacts"] == {"trainable": None, "reason": "--no-artefacts"}
    assert sorted(p.name for p in results.iterdir() if not p.name.startswith(".")) == sorted(
        [path.name, f"{record['run_id']}.predictions.npz"]
    )
    # how records are written is not part of the cell: on or off, the same run id
    on = request(root, ["lora"], epochs=1, results=results)
    assert [c.run_id for c in plan(on, progress=False).cells] == [record["run_id"]]
    assert [c.run_id for c in plan(on.replace(artefacts=False), progress=False).cells] == [
        record["run_id"]
    ]
    with pytest.raises(UserError, match=r"kept no trained tensors \(--no-artefacts\)"):
        load_adapted(record["run_id"], results)


# ---------------------------------------------------------------- a random backbone init


def test_a_no_pretrained_run_rebuilds_from_its_seed(root: Path, tmp_path: Path) -> None:
    req = request(root, ["lora"], weights=None, pretrained=False, epochs=1,
                  results=tmp_path / "results")  # fmt: skip
    the_plan = plan(req, progress=False)
    (record,) = run_grid(the_plan, req).records
    assert record["artefacts"]["frozen"] == "seeded-init"
    torch.manual_seed(999)  # the caller's random state does not enter the rebuild
    built = rebuild(record["run_id"], req.results)
    with torch.no_grad():
        logits = built.model(built.preprocess.evaluation(images_of(the_plan, the_plan.cells[0])))
    np.testing.assert_allclose(logits.numpy(), recorded_test(req, record["run_id"])[0], atol=1e-5)
    # other torch or timm versions may initialise otherwise: refused, not silently different
    path = record_path(req.results, record["run_id"])
    saved = json.loads(path.read_text())
    saved["env"]["timm_version"] = "0.0.1"
    path.write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"--no-pretrained.*only with the versions it ran with"):
        load_adapted(record["run_id"], req.results)


# ---------------------------------------------------------------- crash safety


def test_a_crash_while_writing_leaves_no_file_under_the_final_name(tmp_path: Path, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    final = tmp_path / "run-0123456789ab.trainable.safetensors"
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_tensors(final, {"w": torch.ones(3)})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

    folder = tmp_path / "run-0123456789ab.adapter"

    def half(tmp: Path) -> None:
        (tmp / "adapter_config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomic(folder, half)
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_fails_keeps_the_record_and_says_why(grid, tmp_path: Path, monkeypatch):
    the_plan, _ = grid
    cell = cell_of(the_plan, "linear")
    out = run_cell(
        dataclasses.replace(cell, epochs=1), the_plan.datasets[data_key(cell)], the_plan.source
    )

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench.artefacts, "write_atomic", full_disk)
    from bench.records import save_record

    save_record(tmp_path, out)
    record = read_record(record_path(tmp_path, out["run_id"]))
    assert record["status"] == "ok"
    assert record["artefacts"]["trainable"] is None
    assert "No space left on device" in record["artefacts"]["error"]


def test_stale_artefact_temp_files_are_tidied(tmp_path: Path) -> None:
    old = time.time() - 7200
    names = [".pneumoniamnist-lora-s0-0123456789ab.trainable.safetensors.abcdef12.tmp",
             ".pneumoniamnist-lora-s0-0123456789ab.adapter.abcdef12.tmp"]  # fmt: skip
    (tmp_path / names[0]).write_bytes(b"half")
    (tmp_path / names[1]).mkdir()
    (tmp_path / names[1] / "adapter_config.json").write_text("{}")
    for name in names:
        os.utime(tmp_path / name, (old, old))
    assert remove_stale_temp(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_launched_cell_keeps_the_option(grid) -> None:
    """--no-artefacts reaches a launcher's worker, which writes the records there."""
    from bench.launchers.worker import cell_spec, worker_plan

    the_plan, req = grid
    cell = cell_of(the_plan, "linear")
    for on in (True, False):
        spec = cell_spec(the_plan, req.replace(artefacts=on), cell)
        assert worker_plan(spec, progress=False)[1].artefacts is on
