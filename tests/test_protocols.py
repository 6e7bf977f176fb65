"""Data protocols end to end: user cards, carved validation, few-shot grids, multi-label runs and
`bench data info|check`, on tiny datasets written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.catalog import get_card, load_catalog
from bench.cli import app
from bench.data import few_shot, load_dataset
from bench.errors import UserError
from bench.grid import GridRequest, data_key, plan

runner = CliRunner()
LABELS = ("effusion", "nodule", "mass")


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def png(path: Path, value: int, size: int = 12, mark: int = 0) -> str:
    """A greyscale image whose top half carries `value` (the signal); `mark` in the bottom row
    makes images of equal value distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), 40, dtype=np.uint8)
    arr[: size // 2] = value
    arr[-1, :2] = (mark % 256, mark // 256)
    Image.fromarray(arr).save(path)
    return path.name


def card(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\ntitle = "test {name}"\nlicense = "test"\nsource = "the test"\n'
        f'layout = "written by the test"\n{body}'
    )


@pytest.fixture
def cards(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cards"
    folder.mkdir()
    monkeypatch.setenv("MEDPEFT_CARDS", str(folder))
    return folder


def folder_dataset(root: Path, per_class: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.png with n images per class; class k is brighter."""
    for s, (split, counts) in enumerate(per_class.items()):
        for k, (cls, n) in enumerate(counts.items()):
            for i in range(n):
                png(root / split / cls / f"{i:03d}.png", 60 + 80 * k + i % 3, mark=1000 * s + i)


FOLDER_CARD = """task = "multiclass"
format = "imagefolder"
primary_metric = "accuracy"
classes = ["benign", "malignant", "normal"]
image_size = 16
val_fraction = 0.25
epochs = 2
"""


def multilabel_dataset(root: Path, n: dict[str, int]) -> None:
    """A MedFMC-style multi-hot CSV: label j is on when bit j of the row index is set."""
    rows = ["image,split," + ",".join(LABELS)]
    for split, count in n.items():
        for i in range(count):
            bits = [(i >> j) & 1 for j in range(3)]
            value = 50 + 60 * bits[0] + 30 * bits[1] + 15 * bits[2]
            name = png(root / "img" / f"{split}{i:03d}.png", value)
            rows.append(f"img/{name},{split}," + ",".join(map(str, bits)))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


ML_CARD = f"""task = "multilabel"
format = "csv"
primary_metric = "map"
classes = {list(LABELS)!r}
image_size = 16
epochs = 2
[reader]
manifest = "labels.csv"
"""


# ---------------------------------------------------------------------------------- catalog


def test_user_card_folder_adds_a_dataset(cards) -> None:
    card(cards, "mine", FOLDER_CARD)
    assert "mine" in load_catalog() and "demo" in load_catalog()
    assert get_card("mine").classes == ("benign", "malignant", "normal")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (FOLDER_CARD.replace("multiclass", "multi-class"), "task 'multi-class' is not one of"),
        (FOLDER_CARD.replace('"accuracy"', '"map"'), "primary_metric 'map' is not reported"),
        (FOLDER_CARD.replace("image_size = 16\n", ""), "needs image_size"),
        (FOLDER_CARD.replace("imagefolder", "dicom"), "format 'dicom' is not one of"),
    ],
)
def test_bad_card_names_its_file(cards, body, message) -> None:
    card(cards, "mine", body)
    with pytest.raises(UserError, match=message) as err:
        load_catalog()
    assert str(cards / "mine.toml") in str(err.value)


def test_medmnist_size_variants() -> None:
    big = get_card("pneumoniamnist_224")
    assert (big.file, big.image_size, big.name) == (
        "pneumoniamnist_224.npz",
        224,
        "pneumoniamnist_224",
    )
    assert get_card("pneumoniamnist_28") is get_card("pneumoniamnist")
    with pytest.raises(UserError, match=r"sizes \[28, 64, 128, 224\]"):
        get_card("pneumoniamnist_100")


# --------------------------------------------------------------------------------- carving


def test_val_is_carved_from_train_when_absent(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    root = tmp_path / "data"
    folder_dataset(root / "mine", {"train": {"benign": 8, "malignant": 8, "normal": 4},
                                   "test": {"benign": 2, "malignant": 2, "normal": 2}})  # fmt: skip
    data = load_dataset(get_card("mine"), root)
    assert {s: len(p) for s, p in data.splits.items()} == {"train": 15, "val": 5, "test": 6}
    # stratified: 25 % of each class (2, 2, 1), and no training image reused in val
    assert np.bincount(data.splits["val"].labels.numpy()).tolist() == [2, 2, 1]
    assert not set(data.splits["val"].paths) & set(data.splits["train"].paths)
    assert data.protocol["val"] == {"carved_from": "train", "fraction": 0.25, "seed": 0, "size": 5}
    again = load_dataset(get_card("mine"), root)
    assert again.splits["val"].paths == data.splits["val"].paths  # fixed seed


def test_missing_test_split_is_never_carved(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    folder_dataset(tmp_path / "mine", {"train": {"benign": 3, "malignant": 3, "normal": 3}})
    with pytest.raises(UserError, match=r"test.*not found"):
        load_dataset(get_card("mine"), tmp_path)


# -------------------------------------------------------------------------------- few-shot


def test_few_shot_grid_same_split_for_every_method_and_recorded(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    root = tmp_path / "data"
    folder_dataset(root / "mine", {s: {"benign": 6, "malignant": 6, "normal": 6}
                                   for s in ("train", "val", "test")})  # fmt: skip
    req = GridRequest(methods=["linear", "vpt"], datasets=["mine"], seeds=[0], backbone="test_vit",
                     pretrained=False, img_size=32, data_root=root, results=tmp_path / "r",
                     shots=[1, 2], split_seeds=[0, 1], epochs=1)  # fmt: skip
    p = plan(req, progress=False)
    assert len(p.cells) == 2 * 2 * 2  # shots x split seeds x methods
    assert len({c.run_id for c in p.cells}) == 8
    for cell in p.cells:
        view = p.datasets[data_key(cell)]
        counts = np.bincount(view.splits["train"].labels.numpy(), minlength=3)
        assert counts.tolist() == [cell.shots] * 3
        assert view.protocol["train_indices"] == sorted(view.protocol["train_indices"])
        train_paths = set(view.splits["train"].paths)
        assert not train_paths & (set(view.splits["val"].paths) | set(view.splits["test"].paths))
    by_key = {data_key(c): p.datasets[data_key(c)].protocol["train_indices"] for c in p.cells}
    assert by_key[("mine", 2, 0)] != by_key[("mine", 2, 1)]
    # a fresh plan (a rerun) draws the same images
    again = plan(req, progress=False)
    assert {k: v.protocol["train_indices"] for k, v in again.datasets.items()} == by_key
    # run one cell and check the record carries the sample
    res = bench("run", "--methods", "linear", "--datasets", "mine", "--data-root", str(root),
                "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                "--shots", "2", "--split-seeds", "1", "--results", str(tmp_path / "r"),
                "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(f.read_text()) for f in (tmp_path / "r").glob("*.json")]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["config"]["shots"] == 2 and rec["config"]["split_seed"] == 1
    assert rec["dataset"]["protocol"]["train_indices"] == by_key[("mine", 2, 1)]
    assert rec["dataset"]["sizes"]["train"] == 6 and "2shot-x1" in rec["run_id"]


def test_too_few_images_for_shots_fails_before_training(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    root = tmp_path / "data"
    folder_dataset(root / "mine", {s: {"benign": 6, "malignant": 6, "normal": 2}
                                   for s in ("train", "val", "test")})  # fmt: skip
    res = bench("run", "--methods", "linear", "--datasets", "mine", "--data-root", str(root),
                "--backbone", "test_vit", "--no-pretrained", "--shots", "5",
                "--results", str(tmp_path / "r"), "--no-progress")  # fmt: skip
    assert res.exit_code == 2 and "normal" in res.stderr
    assert not (tmp_path / "r").exists()


def test_published_shot_files_are_read_by_split_seed(cards, tmp_path) -> None:
    card(cards, "fmc", """task = "multilabel"
format = "split-list"
primary_metric = "map"
classes = ["a", "b"]
image_size = 16
[reader]
images = "images"
[reader.files]
train = "train_20.txt"
val = "val_20.txt"
test = "test_WithLabel.txt"
[reader.shot_files]
train = "fmc_{shots}-shot_train_exp{exp}.txt"
val = "fmc_{shots}-shot_val_exp{exp}.txt"
""")  # fmt: skip
    folder = tmp_path / "fmc"
    lines = {}
    for i in range(12):
        png(folder / "images" / f"im {i}.png", 40 + 15 * i)
        lines[i] = f"im {i}.png {i % 2},{(i // 2) % 2}"
    for name, idx in {"train_20.txt": range(0, 6), "val_20.txt": range(6, 9),
                      "test_WithLabel.txt": range(9, 12), "fmc_1-shot_train_exp2.txt": [1, 2],
                      "fmc_1-shot_val_exp2.txt": [6, 7]}.items():  # fmt: skip
        (folder / name).write_text("\n".join(lines[i] for i in idx) + "\n")
    data = load_dataset(get_card("fmc"), tmp_path)
    view = few_shot(data, 1, 1, tmp_path)  # split seed 1 -> exp2
    assert view.protocol["train_paths"] == ["images/im 1.png", "images/im 2.png"]
    assert view.splits["train"].labels.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert len(view.splits["val"]) == 2 and len(view.splits["test"]) == 3
    assert view.splits["test"] is data.splits["test"]  # shared by every view, never copied
    with pytest.raises(UserError, match=r"exp1.*--split-seeds 0-4"):
        few_shot(data, 1, 0, tmp_path)


# ------------------------------------------------------------------------------ multi-label


def test_multilabel_dataset_trains_with_bce_and_reports_map(cards, tmp_path) -> None:
    card(cards, "chest", ML_CARD)
    root = tmp_path / "data"
    multilabel_dataset(root / "chest", {"train": 24, "val": 8, "test": 8})
    data = load_dataset(get_card("chest"), root)
    assert data.splits["train"].labels.shape == (24, 3)
    res = bench("run", "--methods", "linear,lora", "--datasets", "chest", "--data-root", str(root),
                "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "2",
                "--results", str(tmp_path / "r"), "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    recs = [json.loads(f.read_text()) for f in (tmp_path / "r").glob("*.json")]
    assert len(recs) == 2
    for rec in recs:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["metrics"]["primary_metric"] == "map"
        assert set(rec["metrics"]["test"]) >= {"map", "auc", "label_accuracy"}
        assert 0.0 <= rec["metrics"]["test"]["map"] <= 1.0
        # BCE on multi-hot targets: the logged training loss is a per-entry BCE, ~0.69 at start
        assert 0.3 < rec["training"]["history"][0]["train_loss"] < 1.2


# -------------------------------------------------------------------------------- data CLI


def test_data_info_and_check(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    root = tmp_path / "data"
    info = bench("data", "info", "mine", "--data-root", str(root))
    assert info.exit_code == 0 and "not found" in info.output and "benign" in info.output
    folder_dataset(root / "mine", {"train": {"benign": 4, "malignant": 4, "normal": 4},
                                   "test": {"benign": 2, "malignant": 2, "normal": 0}})  # fmt: skip
    # the same image in train and test: flagged as leakage
    (root / "mine/test/normal").mkdir(parents=True)
    Image.open(root / "mine/train/normal/000.png").save(root / "mine/test/normal/copy.png")
    res = bench("data", "check", "mine", "--data-root", str(root), "--shots", "2", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (
        "val carved from train" in res.output and "2-shot sample for split seed 0: ok" in res.output
    )
    assert "1 image(s) of test also appear in" in res.output and "copy.png" in res.output
    bad = bench("data", "check", "mine", "--data-root", str(root), "--shots", "4", "--no-progress")
    assert bad.exit_code == 2 and "error:" in bad.stderr


def test_data_check_names_a_truncated_image(cards, tmp_path) -> None:
    card(cards, "mine", FOLDER_CARD)
    root = tmp_path / "data"
    folder_dataset(root / "mine", {s: {"benign": 2, "malignant": 2, "normal": 2}
                                   for s in ("train", "test")})  # fmt: skip
    victim = root / "mine/train/malignant/001.png"
    victim.write_bytes(victim.read_bytes()[:40])
    res = bench("data", "check", "mine", "--data-root", str(root), "--no-progress")
    assert res.exit_code == 2 and "train/malignant/001.png" in res.stderr


def test_download_refuses_non_medmnist_with_the_source(cards) -> None:
    card(cards, "mine", FOLDER_CARD)
    res = bench("data", "download", "mine")
    assert res.exit_code == 2 and "the test" in res.stderr


def test_report_pools_split_seeds_within_a_shot_count() -> None:
    """Few-shot results are averaged over samplings and runs (as the papers do), never across
    shot counts or with full-data runs."""
    from bench.report import blocks, records_frame, summarize

    def rec(shots, split_seed, seed, value):
        cfg = {"dataset": "mine", "method": "linear", "seed": seed, "shots": shots,
               "split_seed": split_seed, "backbone": "b", "pretrained": True}  # fmt: skip
        return {"run_id": f"{shots}-{split_seed}-{seed}", "status": "ok", "config": cfg,
                "metrics": {"primary_metric": "accuracy", "primary": value, "test": {}}}  # fmt: skip

    records = [rec(1, 0, 0, 0.50), rec(1, 1, 0, 0.60), rec(1, 1, 1, 0.70),
               rec(5, 0, 0, 0.90), rec(None, 0, 0, 0.95)]  # fmt: skip
    summary = summarize(records_frame(records))
    one = summary[summary["shots"] == 1].iloc[0]
    assert one["seeds"] == 3 and one["mean"] == pytest.approx(60.0)
    assert one["std"] == pytest.approx(10.0)
    titles = [title for title, _, _ in blocks(summary)]
    assert titles == ["mine 1-shot · b", "mine 5-shot · b", "mine · b"]
