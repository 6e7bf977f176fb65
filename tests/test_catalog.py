"""Every dataset card in datasets/ follows the card schema, and the catalogue's facts hold.

The cards are parsed with tomllib here, independently of bench.data, and checked against the
schema as written in the design notes (allowed tasks, formats and per-task metrics restated
below), so a card the suite's loader would accept but that breaks the schema still fails.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CARD_DIR = Path(__file__).resolve().parents[1] / "datasets"
CARDS: dict[str, dict[str, Any]] = {
    p.stem: tomllib.loads(p.read_text(encoding="utf-8")) for p in sorted(CARD_DIR.glob("*.toml"))
}

TASKS = {"multiclass", "binary", "multilabel", "ordinal"}
FORMATS = {"demo", "medmnist-npz", "imagefolder", "csv", "split-list"}
SINGLE_LABEL_METRICS = {"accuracy", "balanced_accuracy", "macro_f1", "auc"}
TASK_METRICS = {
    "multiclass": SINGLE_LABEL_METRICS,
    "binary": SINGLE_LABEL_METRICS,
    "ordinal": SINGLE_LABEL_METRICS | {"qwk"},
    "multilabel": {"map", "auc", "label_accuracy"},
}
SPLITS = {"train", "val", "test"}
MEDMNIST_SIZES = {28, 64, 128, 224}
TEXT_KEYS = (
    "name",
    "title",
    "modality",
    "task",
    "format",
    "primary_metric",
    "layout",
    "source",
    "license",
    "citation",
)

MEDMNIST_2D = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)
MEDFMC = {"medfmc-chestdr": "chest", "medfmc-colonpath": "colon", "medfmc-endo": "endo"}
# FPT repo configs/dataset/<yaml>.yaml at 8fa801f: (num_classes, learning_rate).
FPT_CONFIGS = {
    "messidor2": (5, 2e-4),
    "ddr": (5, 5e-4),
    "isic2016": (2, 5e-3),
    "mini-ddsm": (3, 1e-3),
    "cmmd": (2, 5e-5),
    "covid": (3, 1e-4),
    "chncxr": (2, 5e-4),
    "isic2018": (7, 1e-4),
}


def check_card(stem: str, card: dict[str, Any]) -> list[str]:
    """Every schema violation in one parsed card (empty when the card is valid)."""
    errors: list[str] = []
    synthetic = card.get("format") == "demo"
    for key in TEXT_KEYS:
        value = card.get(key)
        # the synthetic demo has no dataset paper; every real dataset must cite one
        if key == "citation" and synthetic and value == "":
            continue
        if not isinstance(value, str) or not value.strip():
            errors.append(f"{key} missing or empty")
    if card.get("name") != stem:
        errors.append(f"name {card.get('name')!r} != file stem {stem!r}")
    if not re.fullmatch(r"[a-z0-9-]+", stem):
        errors.append(f"name {stem!r} is not lowercase [a-z0-9-]")
    task, fmt = card.get("task"), card.get("format")
    if task not in TASKS:
        errors.append(f"task {task!r} not in {sorted(TASKS)}")
    if fmt not in FORMATS:
        errors.append(f"format {fmt!r} not in {sorted(FORMATS)}")
    if task in TASKS and card.get("primary_metric") not in TASK_METRICS[task]:
        errors.append(f"primary_metric {card.get('primary_metric')!r} invalid for {task}")

    classes = card.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        errors.append("classes must be a list of non-empty strings")
        classes = []
    if not classes and not synthetic:  # the demo's classes are filled in at load time
        errors.append("classes is empty")
    if len(set(classes)) != len(classes):
        errors.append("class names repeat")
    if task == "binary" and len(classes) != 2:
        errors.append(f"binary task with {len(classes)} classes")

    size = card.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        errors.append(f"image_size {size!r} is not a positive int")
    if "val_fraction" in card and not 0 < card["val_fraction"] < 1:
        errors.append("val_fraction outside (0, 1)")
    if "reference_lr" in card and not (
        isinstance(card["reference_lr"], float) and card["reference_lr"] > 0
    ):
        errors.append("reference_lr must be a positive float")

    reader = card.get("reader", {})
    if fmt == "medmnist-npz":
        mm = card.get("medmnist", {})
        if mm.get("flag") != stem:
            errors.append(f"medmnist.flag {mm.get('flag')!r} != name {stem!r}")
        sizes = mm.get("sizes")
        if not sizes or not set(sizes) <= MEDMNIST_SIZES:
            errors.append(f"medmnist.sizes {sizes!r} not a non-empty subset of {MEDMNIST_SIZES}")
        if card.get("file") != f"{stem}.npz":
            errors.append(f"file {card.get('file')!r} != {stem}.npz")
        if card.get("subdir") != "":
            errors.append('medmnist cards need subdir = "" (files sit in the data root)')
        if size != 28:
            errors.append("image_size of a medmnist card is the default file's 28")
    elif fmt == "split-list":
        files = reader.get("files", {})
        for split in ("train", "test"):
            if not isinstance(files.get(split), str) or not files[split]:
                errors.append(f"reader.files.{split} missing")
        if not set(files) <= SPLITS:
            errors.append(f"reader.files has unknown splits {sorted(set(files) - SPLITS)}")
        if not isinstance(reader.get("images"), str) or not reader.get("images"):
            errors.append("reader.images missing")
        for split, pattern in reader.get("shot_files", {}).items():
            if split not in ("train", "val") or "{shots}" not in pattern or "{exp}" not in pattern:
                errors.append(f"reader.shot_files.{split} = {pattern!r} is not a pattern")
    elif fmt == "csv":
        splits = reader.get("splits", {})
        train = splits.get("train", {})
        if not reader.get("manifest") and not train.get("manifest"):
            errors.append("csv card needs reader.manifest or reader.splits.train.manifest")
        if not set(splits) <= SPLITS:
            errors.append(f"reader.splits has unknown splits {sorted(set(splits) - SPLITS)}")
        if reader.get("onehot") and task == "multilabel":
            errors.append("onehot is single-label; multilabel uses per-class columns")
        if not reader.get("onehot") and task != "multilabel" and not reader.get("label_column"):
            errors.append("single-label csv needs reader.label_column or reader.onehot")
    return errors


@pytest.mark.parametrize("stem", sorted(CARDS))
def test_card_follows_schema(stem: str) -> None:
    assert check_card(stem, CARDS[stem]) == []


def test_catalogue_has_every_paper_dataset() -> None:
    expected = {*MEDMNIST_2D, *MEDFMC, *FPT_CONFIGS, "demo"}
    assert len(expected) == 24
    assert expected <= set(CARDS)


def test_medmnist_cards_match_info() -> None:
    # class counts and tasks from medmnist 3.0.2 INFO (label dict lengths, "task" strings)
    counts = {
        "pathmnist": 9,
        "chestmnist": 14,
        "dermamnist": 7,
        "octmnist": 4,
        "pneumoniamnist": 2,
        "retinamnist": 5,
        "breastmnist": 2,
        "bloodmnist": 8,
        "tissuemnist": 8,
        "organamnist": 11,
        "organcmnist": 11,
        "organsmnist": 11,
    }
    assert set(counts) == set(MEDMNIST_2D)
    for flag, n in counts.items():
        card = CARDS[flag]
        assert card["format"] == "medmnist-npz", flag
        assert len(card["classes"]) == n, flag
        assert card["medmnist"]["sizes"] == [28, 64, 128, 224], flag
    assert CARDS["chestmnist"]["task"] == "multilabel"
    assert CARDS["retinamnist"]["task"] == "ordinal"
    assert CARDS["retinamnist"]["classes"] == ["0", "1", "2", "3", "4"]
    assert {CARDS[f]["task"] for f in ("pneumoniamnist", "breastmnist")} == {"binary"}
    # index order is a fact of the npz labels: spot-check first/last names
    assert CARDS["pathmnist"]["classes"][0] == "adipose"
    assert CARDS["pathmnist"]["classes"][-1] == "colorectal adenocarcinoma epithelium"
    assert CARDS["chestmnist"]["classes"][-1] == "hernia"
    assert CARDS["breastmnist"]["classes"] == ["malignant", "normal, benign"]
    assert CARDS["dermamnist"]["license"] == "CC BY-NC 4.0"


def test_medfmc_cards_match_ept_repo() -> None:
    chest = CARDS["medfmc-chestdr"]["classes"]
    assert len(chest) == 19
    assert chest[0] == "pleural_effusion" and chest[-1] == "consolidation"
    assert chest[10] == "TB"  # EPT's Chest19.CLASSES spells it upper-case
    assert CARDS["medfmc-endo"]["classes"] == ["ulcer", "erosion", "polyp", "tumor"]
    assert CARDS["medfmc-colonpath"]["classes"] == ["negative", "positive"]
    for name, prefix in MEDFMC.items():
        card = CARDS[name]
        assert card["format"] == "split-list" and card["image_size"] == 224, name
        assert card["reader"]["files"] == {
            "train": "train_20.txt",
            "val": "val_20.txt",
            "test": "test_WithLabel.txt",
        }, name
        assert card["reader"]["shot_files"] == {
            "train": f"{prefix}_{{shots}}-shot_train_exp{{exp}}.txt",
            "val": f"{prefix}_{{shots}}-shot_val_exp{{exp}}.txt",
        }, name
    assert [CARDS[n]["primary_metric"] for n in MEDFMC] == ["map", "accuracy", "map"]


def test_isic2018_card_reads_the_official_csvs() -> None:
    card = CARDS["isic2018"]
    assert card["classes"] == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert (card["task"], card["format"], card["primary_metric"]) == (
        "multiclass",
        "csv",
        "accuracy",
    )
    reader = card["reader"]
    assert reader["onehot"] is True and reader["image_suffix"] == ".jpg"
    for split, word in (("train", "Training"), ("val", "Validation"), ("test", "Test")):
        stem = f"ISIC2018_Task3_{word}_GroundTruth"
        assert reader["splits"][split] == {
            "manifest": f"{stem}/{stem}.csv",
            "images": f"ISIC2018_Task3_{word}_Input",
        }


def test_fpt_cards_match_fpt_configs() -> None:
    for name, (num_classes, lr) in FPT_CONFIGS.items():
        card = CARDS[name]
        assert len(card["classes"]) == num_classes, name
        assert card["reference_lr"] == pytest.approx(lr, rel=1e-12), name
        if name == "isic2018":
            continue  # the csv card shared with EPT
        assert (card["format"], card["primary_metric"], card["image_size"]) == (
            "imagefolder",
            "auc",
            512,
        ), name
        assert "does not publish its split ratios" in card["notes"], name
    assert CARDS["messidor2"]["classes"] == CARDS["ddr"]["classes"] == ["0", "1", "2", "3", "4"]
    assert CARDS["mini-ddsm"]["classes"] == ["Benign", "Cancer", "Normal"]
    # ImageFolder label order is the sorted folder names; binary index 1 is the positive class
    for name in FPT_CONFIGS:
        if CARDS[name]["format"] == "imagefolder":
            assert CARDS[name]["classes"] == sorted(CARDS[name]["classes"]), name
    assert CARDS["chncxr"]["classes"][1] == "tuberculosis"


def _valid() -> dict[str, Any]:
    return copy.deepcopy(CARDS["pathmnist"])


def _mutate(card: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    node = card
    for key in parents:
        node = node.setdefault(key, {})
    if value is KeyError:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return card


@pytest.mark.parametrize(
    ("base", "path", "value", "message"),
    [
        ("pathmnist", "task", "multiclas", "task"),
        ("pathmnist", "format", "npz", "format"),
        ("pathmnist", "primary_metric", "map", "primary_metric"),
        ("pathmnist", "name", "path-mnist", "file stem"),
        ("pathmnist", "license", KeyError, "license"),
        ("pathmnist", "citation", "", "citation"),
        ("pathmnist", "classes", ["a", "b", "a"], "repeat"),
        ("pathmnist", "medmnist.flag", "pathmnist_64", "medmnist.flag"),
        ("pathmnist", "medmnist.sizes", [28, 512], "medmnist.sizes"),
        ("pneumoniamnist", "classes", ["normal", "pneumonia", "other"], "binary"),
        ("medfmc-chestdr", "reader.files.test", KeyError, "reader.files.test"),
        ("medfmc-chestdr", "reader.shot_files.train", "chest_1-shot_train.txt", "pattern"),
        ("isic2018", "reader.splits.train", KeyError, "manifest"),
        ("messidor2", "image_size", "512", "image_size"),
    ],
)
def test_checker_rejects_broken_cards(base: str, path: str, value: Any, message: str) -> None:
    stem = base
    card = _mutate(copy.deepcopy(CARDS[base]), path, value)
    errors = check_card(stem, card)
    assert any(message in e for e in errors), errors


def test_suite_loader_accepts_every_card() -> None:
    """The cards also load through bench.data (what `bench list` shows)."""
    from bench.catalog import load_catalog

    assert set(load_catalog()) == set(CARDS)
