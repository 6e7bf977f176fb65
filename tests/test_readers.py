"""Dataset readers (`bench.formats`): image folders, CSV manifests, split lists and MedMNIST
npz files, on tiny files written per test."""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import UserError
from bench.formats import SPLITS
from bench.formats import images as decoding
from bench.formats.csv_manifest import read_csv_manifest, read_csv_splits
from bench.formats.imagefolder import read_imagefolder
from bench.formats.medmnist import download_medmnist, npz_image_size, read_medmnist_npz
from bench.formats.split_list import read_split_lists

CLASSES = ("zeta", "alpha")  # card order differs from sorted folder order on purpose


def png(path: Path, value: int | tuple[int, int, int], mode: str = "L") -> Path:
    """A uniform 12x10 (h x w) image, so resizing to 8 is exercised and the pixel value
    identifies the file after resizing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full((12, 10), value, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, (10, 12), value).save(path)
    return path


def folder(root: Path, spec: dict[str, dict[str, list[int]]]) -> None:
    """spec[split][class] = grey values, one image each, named v<value>.png."""
    for split, per_class in spec.items():
        for cls, values in per_class.items():
            for v in values:
                png(root / split / cls / f"v{v:03d}.png", v)


def csv_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- image folder


def test_imagefolder_shapes_labels_and_order(tmp_path: Path) -> None:
    # written in a scrambled order: the result must not depend on creation order
    folder(tmp_path, {"train": {"alpha": [30, 10], "zeta": [50, 40]}, "test": {"alpha": [70]}})
    png(tmp_path / "train" / "alpha" / "sub" / "v020.png", 20)  # nested folders are read too
    (tmp_path / "train" / "alpha" / "notes.txt").write_text("not an image")
    out = read_imagefolder(tmp_path, CLASSES, size=8)
    assert set(out) == {"train", "test"}  # missing val is absent, not an error
    train = out["train"]
    assert train.images.shape == (5, 8, 8, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    # zeta is class 0 (card order) although "alpha" sorts first; then by relative path
    assert train.labels.tolist() == [0, 0, 1, 1, 1]
    assert train.paths == [
        "train/zeta/v040.png",
        "train/zeta/v050.png",
        "train/alpha/sub/v020.png",
        "train/alpha/v010.png",
        "train/alpha/v030.png",
    ]
    # each image's pixels are its own (uniform images stay uniform through the resize)
    assert train.images[:, :, :, 0].reshape(5, -1).min(1).tolist() == [40, 50, 20, 10, 30]
    assert train.images[:, :, :, 0].reshape(5, -1).max(1).tolist() == [40, 50, 20, 10, 30]
    assert out["test"].labels.tolist() == [1] and out["test"].paths == ["test/alpha/v070.png"]
    again = read_imagefolder(tmp_path, CLASSES, size=8)
    assert again["train"].paths == train.paths
    assert np.array_equal(again["train"].images, train.images)


def test_imagefolder_resize_is_bilinear_without_keeping_aspect(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = tmp_path / "train" / "zeta" / "a.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(pixels).save(path)
    png(tmp_path / "train" / "alpha" / "b.png", (1, 2, 3), mode="RGB")
    out = read_imagefolder(tmp_path, CLASSES, size=8)["train"]
    expected = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.Resampling.BILINEAR))
    assert out.images.shape == (2, 8, 8, 3)
    assert np.array_equal(out.images[0], expected)
    assert (out.images[1] == [1, 2, 3]).all()


def test_grayscale_kept_only_when_every_image_is_grey(tmp_path: Path) -> None:
    png(tmp_path / "train" / "zeta" / "a.png", 100)
    png(tmp_path / "train" / "alpha" / "b.png", 257 * 200, mode="I;16")
    png(tmp_path / "test" / "alpha" / "c.png", 60)
    grey = read_imagefolder(tmp_path, CLASSES, size=8)
    assert grey["train"].images.shape == (2, 8, 8, 1) and grey["test"].images.shape[-1] == 1
    # 16-bit grey is rescaled to 8 bits (200), not clipped to 255
    assert (grey["train"].images[1] == 200).all() and (grey["train"].images[0] == 100).all()
    forced = read_imagefolder(tmp_path, CLASSES, size=8, grayscale=False)["train"]
    assert forced.images.shape == (2, 8, 8, 3) and (forced.images[0] == 100).all()

    # one RGB image anywhere (here in test) turns the whole dataset into 3 channels
    png(tmp_path / "test" / "zeta" / "d.png", (10, 20, 30), mode="RGB")
    mixed = read_imagefolder(tmp_path, CLASSES, size=8)
    assert mixed["train"].images.shape == (2, 8, 8, 3)
    assert (mixed["train"].images[0] == 100).all()  # grey replicated into R, G and B
    assert (mixed["test"].images[0] == [10, 20, 30]).all()
    to_grey = read_imagefolder(tmp_path, CLASSES, size=8, grayscale=True)["test"]
    assert to_grey.images.shape == (2, 8, 8, 1)
    assert (
        to_grey.images[0] == Image.new("RGB", (1, 1), (10, 20, 30)).convert("L").getpixel((0, 0))
    ).all()


def test_imagefolder_only_listed_splits_are_read(tmp_path: Path) -> None:
    folder(tmp_path, {"train": {"zeta": [1], "alpha": [2]}, "val": {"zeta": [3]}})
    assert set(read_imagefolder(tmp_path, CLASSES, size=8, splits=("train",))) == {"train"}


def test_truncated_png_names_its_path(tmp_path: Path) -> None:
    folder(tmp_path, {"train": {"zeta": [1], "alpha": [2]}})
    bad = tmp_path / "train" / "alpha" / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
        bad
    )
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot read image train/alpha/noise\.png.*truncated"):
        read_imagefolder(tmp_path, CLASSES, size=8)
    bad.write_bytes(b"this is not a png")
    with pytest.raises(UserError, match=r"cannot read image train/alpha/noise\.png"):
        read_imagefolder(tmp_path, CLASSES, size=8)


def test_unexpected_class_folder_is_listed(tmp_path: Path) -> None:
    folder(tmp_path, {"train": {"zeta": [1], "alpha": [2], "Alpha": [3]}})
    with pytest.raises(UserError, match=r"\['Alpha'\] are not classes.*\['zeta', 'alpha'\]"):
        read_imagefolder(tmp_path, CLASSES, size=8)


def test_class_without_training_image_is_named(tmp_path: Path) -> None:
    folder(tmp_path, {"train": {"zeta": [1]}, "test": {"alpha": [2]}})
    (tmp_path / "train" / "alpha").mkdir()
    with pytest.raises(UserError, match=r"no training image for class\(es\) \['alpha'\]"):
        read_imagefolder(tmp_path, CLASSES, size=8)


def test_missing_train_folder(tmp_path: Path) -> None:
    folder(tmp_path, {"test": {"zeta": [1], "alpha": [2]}})
    with pytest.raises(UserError, match=r"no 'train' folder"):
        read_imagefolder(tmp_path, CLASSES, size=8)
    with pytest.raises(UserError, match=r"not found"):
        read_imagefolder(tmp_path / "nope", CLASSES, size=8)


# ---------------------------------------------------------------- CSV manifest


def test_csv_single_label_split_routing(tmp_path: Path) -> None:
    for i, v in enumerate([10, 20, 30, 40, 50]):
        png(tmp_path / "img" / f"{i}.png", v)
    manifest = csv_file(
        tmp_path / "m.csv",
        [
            "image,label,split,patient",
            "img/0.png,alpha,train,p1",
            "img/1.png,zeta,test,p2",
            "img/2.png,0,train,p3",  # integer index = card order: 0 is zeta
            "img/3.png, alpha ,VAL,p4",
            "./img/4.png,1,train,p5",
        ],
    )
    out = read_csv_manifest(tmp_path, manifest, CLASSES, size=8)
    assert set(out) == {"train", "val", "test"}
    train = out["train"]
    assert train.paths == ["img/0.png", "img/2.png", "img/4.png"]  # manifest order, normalised
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [1, 0, 1]
    assert train.images.shape == (3, 8, 8, 1) and train.images.dtype == np.uint8
    assert train.images.reshape(3, -1).max(1).tolist() == [10, 30, 50]
    assert out["val"].paths == ["img/3.png"] and out["val"].labels.tolist() == [1]
    assert out["test"].paths == ["img/1.png"] and out["test"].labels.tolist() == [0]

    everything = read_csv_manifest(tmp_path, manifest, CLASSES, size=8, split_column=None)
    assert set(everything) == {"train"} and len(everything["train"]) == 5


def test_csv_multilabel_multihot_exact(tmp_path: Path) -> None:
    classes = ("nodule", "effusion", "fracture")
    for i in range(3):
        png(tmp_path / f"{i}.png", (i, 0, 0), mode="RGB")
    manifest = csv_file(
        tmp_path / "m.csv",
        ["image,fracture,nodule,effusion", "0.png,1,0,1", "1.png,0,0,0", "2.png,1,1,1"],
    )
    out = read_csv_manifest(tmp_path, manifest, classes, size=8, multilabel=True, split_column=None)
    train = out["train"]
    assert train.labels.dtype == np.float32
    # columns follow the card's class order, not the CSV's column order
    assert train.labels.tolist() == [[0, 1, 1], [0, 0, 0], [1, 1, 1]]
    assert train.images.shape == (3, 8, 8, 3)


def test_csv_missing_columns_named(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["file,label", "a.png,zeta"])
    with pytest.raises(
        UserError,
        match=r"missing column\(s\) \['image', 'split'\]; columns present: \['file', 'label'\]",
    ):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


def test_csv_unknown_label(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["image,label,split", "a.png,beta,train"])
    with pytest.raises(UserError, match=r"m\.csv line 2: label 'beta' is not a class"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)
    manifest = csv_file(tmp_path / "m.csv", ["image,label,split", "a.png,2,train"])
    with pytest.raises(UserError, match=r"label '2' is not a class.*index 0\.\.1"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


def test_csv_multilabel_columns_must_match_classes(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["image,zeta,gamma", "a.png,1,0"])
    with pytest.raises(UserError, match=r"missing \['alpha'\], unexpected \['gamma'\]"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8, multilabel=True, split_column=None)


def test_csv_multihot_value_must_be_0_or_1(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["image,zeta,alpha", "a.png,1,2"])
    with pytest.raises(UserError, match=r"line 2: column 'alpha' holds '2'"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8, multilabel=True, split_column=None)


def test_csv_unknown_split(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["image,label,split", "a.png,zeta,holdout"])
    with pytest.raises(UserError, match=r"line 2: split 'holdout' is not one of"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


def test_csv_image_missing_on_disk(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(
        tmp_path / "m.csv", ["image,label,split", "a.png,zeta,train", "b.png,alpha,train"]
    )
    with pytest.raises(UserError, match=r"line 3: image 'b\.png' not found"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_csv_paths_escaping_root_refused(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "data"
    png(root / "a.png", 1)
    secret = png(tmp_path / "secret.png", 2)  # exists, so only the escape check can refuse it
    if kind == "dotdot":
        value = "sub/../../secret.png"
    elif kind == "absolute":
        value = str(secret)
    else:
        if not hasattr(os, "symlink"):
            pytest.skip("no symlinks")
        (root / "link.png").symlink_to(secret)
        value = "link.png"
    manifest = csv_file(
        tmp_path / "m.csv", ["image,label,split", "a.png,zeta,train", f"{value},alpha,train"]
    )
    with pytest.raises(UserError, match=r"line 3: image path .* points outside the data root"):
        read_csv_manifest(root, manifest, CLASSES, size=8)


def test_csv_class_without_training_image(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    png(tmp_path / "b.png", 2)
    manifest = csv_file(
        tmp_path / "m.csv", ["image,label,split", "a.png,zeta,train", "b.png,alpha,test"]
    )
    with pytest.raises(UserError, match=r"no training image for class\(es\) \['alpha'\]"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


def test_csv_class_names_win_over_indices(tmp_path: Path) -> None:
    # grade-like names: "1" is the class named "1" (index 0 here), not index 1
    png(tmp_path / "a.png", 1)
    png(tmp_path / "b.png", 2)
    manifest = csv_file(tmp_path / "m.csv", ["image,label", "a.png,1", "b.png,0"])
    out = read_csv_manifest(tmp_path, manifest, ("1", "0"), size=8, split_column=None)
    assert out["train"].labels.tolist() == [0, 1]


def test_csv_ragged_row_refused(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 1)
    manifest = csv_file(tmp_path / "m.csv", ["image,label,split", "a.png,zeta"])
    with pytest.raises(UserError, match=r"line 2: 2 fields where the header has 3"):
        read_csv_manifest(tmp_path, manifest, CLASSES, size=8)


# ---------------------------------------------------------------- shared helpers for new readers


def noise_png(path: Path, *, truncate: bool = False) -> Path:
    """A random RGB PNG (incompressible, so half of it is a genuinely truncated file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


def lines_file(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return path.name


def grey_levels(split) -> list[int]:
    """The uniform value of each image of a split (all channels equal)."""
    flat = split.images.reshape(len(split), -1)
    assert (flat.min(1) == flat.max(1)).all()
    return flat[:, 0].tolist()


# ---------------------------------------------------------------- CSV: one-hot, folders, splits

ISIC = ("MEL", "NV", "BCC")


def test_csv_onehot_with_image_dir_and_suffix(tmp_path: Path) -> None:
    # ISIC 2018 style: the image column holds ids without extension, the images sit in a folder
    for i, v in enumerate([10, 20, 30]):
        png(tmp_path / "Input" / f"ISIC_{i}.png", v)
    manifest = csv_file(
        tmp_path / "gt.csv",
        ["image,MEL,NV,BCC", "ISIC_0,0.0,1.0,0.0", "ISIC_1,1.0,0.0,0.0", "ISIC_2,0,0,1"],
    )
    out = read_csv_manifest(
        tmp_path,
        manifest,
        ISIC,
        size=8,
        onehot=True,
        image_dir="Input",
        image_suffix=".png",
        split_column=None,
    )
    train = out["train"]
    assert train.paths == ["Input/ISIC_0.png", "Input/ISIC_1.png", "Input/ISIC_2.png"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [1, 0, 2]
    assert grey_levels(train) == [10, 20, 30]


def test_csv_fixed_split_skips_train_checks(tmp_path: Path) -> None:
    png(tmp_path / "a.png", 5)
    manifest = csv_file(tmp_path / "m.csv", ["image,MEL,NV,BCC,split", "a.png,0,1,0,train"])
    # every row goes to `split`; the split column is not read (its "train" is ignored), and a
    # test-only result needs neither a train row nor every class
    out = read_csv_manifest(tmp_path, manifest, ISIC, size=8, onehot=True, split="test")
    assert set(out) == {"test"} and out["test"].labels.tolist() == [1]
    # as train, the class check applies again
    with pytest.raises(UserError, match=r"no training image for class\(es\) \['MEL', 'BCC'\]"):
        read_csv_manifest(tmp_path, manifest, ISIC, size=8, onehot=True, split="train")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("b.png,1,1,0", r"line 3: one-hot row has 2 classes set \['MEL', 'NV'\]"),
        ("b.png,0,0,0", r"line 3: one-hot row has 0 classes set \[\]"),
        ("b.png,0,0.5,1", r"line 3: column 'NV' holds '0\.5'"),
    ],
)
def test_csv_onehot_row_must_have_exactly_one_1(tmp_path: Path, row: str, message: str) -> None:
    png(tmp_path / "a.png", 1)
    png(tmp_path / "b.png", 2)
    manifest = csv_file(tmp_path / "m.csv", ["image,MEL,NV,BCC", "a.png,1,0,0", row])
    with pytest.raises(UserError, match=message):
        read_csv_manifest(tmp_path, manifest, ISIC, size=8, onehot=True, split_column=None)


@pytest.mark.parametrize("multilabel", [False, True])
def test_csv_ignore_columns(tmp_path: Path, multilabel: bool) -> None:
    png(tmp_path / "a.png", 1)
    png(tmp_path / "b.png", 2)
    png(tmp_path / "c.png", 3)
    manifest = csv_file(
        tmp_path / "m.csv",
        [
            "image,lesion_id,MEL,NV,BCC",
            "a.png,L1,1,0,0",
            "b.png,L2,0,1,0",
            "c.png,L3,0,0,1",
        ],
    )
    kind = {"multilabel": True} if multilabel else {"onehot": True}
    with pytest.raises(UserError, match=r"missing \[\], unexpected \['lesion_id'\]"):
        read_csv_manifest(tmp_path, manifest, ISIC, size=8, split_column=None, **kind)
    out = read_csv_manifest(
        tmp_path, manifest, ISIC, size=8, split_column=None, ignore_columns=["lesion_id"], **kind
    )["train"]
    if multilabel:
        assert out.labels.tolist() == np.eye(3).tolist()
    else:
        assert out.labels.tolist() == [0, 1, 2]
    # a class cannot be ignored away
    with pytest.raises(UserError, match=r"ignore_columns \['NV'\] are classes"):
        read_csv_manifest(
            tmp_path, manifest, ISIC, size=8, split_column=None, ignore_columns=["NV"], **kind
        )


def isic_tree(root: Path, *, rgb_in_test: bool) -> dict[str, tuple[str, str]]:
    """Per-split ground-truth CSVs and image folders, ISIC 2018 style (grey except maybe test)."""
    spec = {"train": [(0, 10), (1, 20), (2, 30)], "val": [(1, 40)], "test": [(2, 50), (0, 60)]}
    manifests = {}
    for split, items in spec.items():
        folder_name = f"{split.title()}_Input"
        rows = ["image,MEL,NV,BCC"]
        for k, (label, value) in enumerate(items):
            if split == "test" and k == 1 and rgb_in_test:
                png(root / folder_name / f"{split}{k}.png", (value, value, value), mode="RGB")
            else:
                png(root / folder_name / f"{split}{k}.png", value)
            rows.append(f"{split}{k}," + ",".join("1" if c == label else "0" for c in range(3)))
        (root / "gt").mkdir(exist_ok=True)
        csv_file(root / "gt" / f"{split}.csv", rows)
        manifests[split] = (f"gt/{split}.csv", folder_name)
    return manifests


def test_csv_splits_read_each_manifest(tmp_path: Path) -> None:
    manifests = isic_tree(tmp_path, rgb_in_test=False)
    out = read_csv_splits(
        tmp_path, manifests, ISIC, size=8, onehot=True, image_suffix=".png", split_column="x"
    )
    assert set(out) == {"train", "val", "test"}
    assert out["train"].paths == [f"Train_Input/train{k}.png" for k in range(3)]
    assert out["train"].labels.tolist() == [0, 1, 2]
    assert out["val"].paths == ["Val_Input/val0.png"] and out["val"].labels.tolist() == [1]
    assert out["test"].labels.tolist() == [2, 0]
    assert [grey_levels(out[s]) for s in SPLITS] == [[10, 20, 30], [40], [50, 60]]
    assert all(out[s].images.shape[-1] == 1 for s in SPLITS)  # all grey: one channel


def test_csv_splits_one_channel_decision_across_splits(tmp_path: Path) -> None:
    manifests = isic_tree(tmp_path, rgb_in_test=True)
    out = read_csv_splits(tmp_path, manifests, ISIC, size=8, onehot=True, image_suffix=".png")
    # one RGB file in test makes every split 3-channel (train alone would be grey)
    assert [out[s].images.shape[-1] for s in SPLITS] == [3, 3, 3]
    assert (out["train"].images[0] == 10).all()
    alone = read_csv_manifest(
        tmp_path,
        tmp_path / "gt" / "train.csv",
        ISIC,
        size=8,
        onehot=True,
        image_dir="Train_Input",
        image_suffix=".png",
        split="train",
    )
    assert alone["train"].images.shape[-1] == 1


def test_csv_splits_errors(tmp_path: Path) -> None:
    manifests = isic_tree(tmp_path, rgb_in_test=False)
    opts = {"size": 8, "onehot": True, "image_suffix": ".png"}
    no_train = {k: v for k, v in manifests.items() if k != "train"}
    with pytest.raises(UserError, match=r"no 'train' manifest"):
        read_csv_splits(tmp_path, no_train, ISIC, **opts)
    gone = {**manifests, "val": ("gt/missing.csv", "Val_Input")}
    with pytest.raises(UserError, match=r"split 'val': manifest .*gt/missing\.csv not found"):
        read_csv_splits(tmp_path, gone, ISIC, **opts)
    # a test image missing on disk is named with its folder and the suffix
    (tmp_path / "Test_Input" / "test1.png").unlink()
    with pytest.raises(UserError, match=r"test\.csv line 3: image 'Test_Input/test1\.png' not"):
        read_csv_splits(tmp_path, manifests, ISIC, **opts)
    # a class only present outside train
    csv_file(tmp_path / "gt" / "train.csv", ["image,MEL,NV,BCC", "train0,1,0,0"])
    (tmp_path / "Test_Input" / "test1.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no training image for class\(es\) \['NV', 'BCC'\]"):
        read_csv_splits(tmp_path, manifests, ISIC, **opts)


# ---------------------------------------------------------------- MedFMC split lists


def test_split_list_single_label(tmp_path: Path) -> None:
    colon = "1903326001_2019-06-11 12_07_06-lv1-3173-23728.png"  # MedFMC Colon: a space inside
    png(tmp_path / "images" / colon, 10)
    png(tmp_path / "images" / "b.png", 20)
    png(tmp_path / "images" / "c.png", 30)
    png(tmp_path / "images" / "d.png", 40)
    files = {
        "train": lines_file(tmp_path / "train.txt", [f"{colon} 1", "", "b.png zeta", "c.png 0"]),
        "test": lines_file(tmp_path / "test.txt", ["  d.png   alpha  "]),
    }
    out = read_split_lists(tmp_path, files, CLASSES, size=8, multilabel=False)
    assert set(out) == {"train", "test"}
    train = out["train"]
    assert train.paths == [f"images/{colon}", "images/b.png", "images/c.png"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [1, 0, 0]
    assert train.images.shape == (3, 8, 8, 1) and grey_levels(train) == [10, 20, 30]
    assert out["test"].paths == ["images/d.png"] and out["test"].labels.tolist() == [1]


def test_split_list_multilabel_comma_and_space_forms(tmp_path: Path) -> None:
    classes = ("a", "b", "c")
    for name, v in [("x.png", 1), ("y y.png", 2), ("z.png", 3), ("scan 7.png", 4)]:
        png(tmp_path / "imgs" / name, (v, 0, 0), mode="RGB")
    (tmp_path / "imgs" / "scan 7.png").rename(tmp_path / "imgs" / "scan 7")  # no extension
    files = {
        # ChestMNIST-like comma form and Endo-like space form, mixed on purpose
        "train": lines_file(tmp_path / "t.txt", ["x.png 1,0,1", "y y.png 0 1 1"]),
        "val": lines_file(tmp_path / "v.txt", ["z.png 0,0,0"]),
        # a file name ending in a number token: accepted because that image exists
        "test": lines_file(tmp_path / "e.txt", ["scan 7 1 1 0"]),
    }
    out = read_split_lists(tmp_path, files, classes, size=8, images="imgs", multilabel=True)
    train = out["train"]
    assert train.labels.dtype == np.float32
    assert train.labels.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert train.paths == ["imgs/x.png", "imgs/y y.png"] and train.images.shape == (2, 8, 8, 3)
    assert out["val"].labels.tolist() == [[0, 0, 0]]
    assert out["test"].paths == ["imgs/scan 7"] and out["test"].labels.tolist() == [[1, 1, 0]]


@pytest.mark.parametrize(
    ("multilabel", "line", "message"),
    [
        (True, "a.png 1,0", r"line 2: found 2 label values, expected 3 0/1 values"),
        (True, "a.png 1 0", r"line 2: found 2 label value\(s\) after the file name, expected 3"),
        (True, "a.png 1 0 1 1", r"line 2: found 4 label values after the file name 'a\.png'"),
        (True, "a.png 1,2,0", r"line 2: label value\(s\) \['2'\] are not 0 or 1"),
        (True, "a.png 1 0 -1", r"line 2: label value\(s\) \['-1'\] are not 0 or 1"),
        (True, "a.png", r"line 2: expected '<file name> <label>' with 3 0/1 values"),
        (False, "a.png 3", r"line 2: label '3' is not a class.*index 0\.\.2"),
        (False, "a.png 0,1,0", r"line 2: label '0,1,0' is a multi-hot vector"),
        (False, "a.png 1 0 0", r"line 2: found 3 label values after the file name 'a\.png', "),
        (False, "a.png", r"line 2: expected '<file name> <label>' with one class label"),
        (False, "nope.png 0", r"line 2: image 'images/nope\.png' not found"),
    ],
)
def test_split_list_line_errors(tmp_path: Path, multilabel: bool, line: str, message: str) -> None:
    classes = ("p", "q", "r")
    for name in ("a.png", "b.png", "c.png", "d.png"):
        png(tmp_path / "images" / name, 1)
    good = "b.png 1,1,0" if multilabel else "b.png 0"
    more = ["c.png 0,1,0", "d.png 0,0,1"] if multilabel else ["c.png 1", "d.png 2"]
    files = {"train": lines_file(tmp_path / "train.txt", [good, line, *more])}
    with pytest.raises(UserError, match=r"annotation file .*train\.txt " + message):
        read_split_lists(tmp_path, files, classes, size=8, multilabel=multilabel)


def test_split_list_file_errors(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png", 1)
    png(tmp_path / "images" / "b.png", 2)
    train = lines_file(tmp_path / "train.txt", ["a.png 0", "b.png 1"])
    with pytest.raises(UserError, match=r"split 'val': annotation file .*val_20\.txt not found"):
        read_split_lists(
            tmp_path, {"train": train, "val": "val_20.txt"}, CLASSES, size=8, multilabel=False
        )
    with pytest.raises(UserError, match=r"no 'train' annotation file"):
        read_split_lists(tmp_path, {"test": train}, CLASSES, size=8, multilabel=False)
    empty = lines_file(tmp_path / "empty.txt", ["", "   "])
    with pytest.raises(UserError, match=r"split 'train': annotation file .*empty\.txt has no"):
        read_split_lists(tmp_path, {"train": empty}, CLASSES, size=8, multilabel=False)
    only_zeta = lines_file(tmp_path / "z.txt", ["a.png 0"])
    with pytest.raises(UserError, match=r"z\.txt: no training image for class\(es\) \['alpha'\]"):
        read_split_lists(
            tmp_path, {"train": only_zeta, "test": train}, CLASSES, size=8, multilabel=False
        )
    # multi-label data has no such requirement (a label may be absent from a few-shot split)
    hot = lines_file(tmp_path / "h.txt", ["a.png 1,0"])
    assert len(read_split_lists(tmp_path, {"train": hot}, CLASSES, size=8, multilabel=True)) == 1
    with pytest.raises(UserError, match=r"split\(s\) \['holdout'\] are not among"):
        read_split_lists(
            tmp_path, {"train": train, "holdout": train}, CLASSES, size=8, multilabel=False
        )


# ---------------------------------------------------------------- every reader: bad PNG, progress


def _reader_cases(root: Path, bad: bool) -> dict:
    """Each reader on the same 5 images (4 train + 1 test); with `bad`, the test image is a
    truncated PNG. Returns {reader name: (call(on_progress), relative path of the test image)}."""
    values = [10, 20, 30, 40, 50]
    labels = [0, 1, 0, 1, 1]
    splits = ["train"] * 4 + ["test"]

    def write(rel: str, v: int, is_bad: bool) -> None:
        if is_bad:
            noise_png(root / rel, truncate=True)
        else:
            png(root / rel, v)

    for i, (v, lab, s) in enumerate(zip(values, labels, splits, strict=True)):
        write(f"folder/{s}/{CLASSES[lab]}/{i}.png", v, bad and i == 4)
    # flat images for the manifest/list readers
    for i, v in enumerate(values):
        write(f"flat/im {i}.png", v, bad and i == 4)
    rows = ["image,label,split"] + [
        f"flat/im {i}.png,{lab},{s}" for i, (lab, s) in enumerate(zip(labels, splits, strict=True))
    ]
    manifest = csv_file(root / "m.csv", rows)
    csv_file(
        root / "tr.csv",
        ["image,zeta,alpha", *[f"im {i},{1 - labels[i]},{labels[i]}" for i in range(4)]],
    )
    csv_file(root / "te.csv", ["image,zeta,alpha", f"im 4,{1 - labels[4]},{labels[4]}"])
    (root / "lists").mkdir(exist_ok=True)
    lines_file(root / "lists" / "tr.txt", [f"im {i}.png {labels[i]}" for i in range(4)])
    lines_file(root / "lists" / "te.txt", [f"im 4.png {labels[4]}"])
    return {
        "imagefolder": (
            lambda cb: read_imagefolder(root / "folder", CLASSES, size=8, on_progress=cb),
            "test/alpha/4.png",
        ),
        "csv": (
            lambda cb: read_csv_manifest(root, manifest, CLASSES, size=8, on_progress=cb),
            "flat/im 4.png",
        ),
        "csv-splits": (
            lambda cb: read_csv_splits(
                root,
                {"train": ("tr.csv", "flat"), "test": ("te.csv", "flat")},
                CLASSES,
                size=8,
                onehot=True,
                image_suffix=".png",
                on_progress=cb,
            ),
            "flat/im 4.png",
        ),
        "split-list": (
            lambda cb: read_split_lists(
                root,
                {"train": "lists/tr.txt", "test": "lists/te.txt"},
                CLASSES,
                size=8,
                images="flat",
                multilabel=False,
                on_progress=cb,
            ),
            "flat/im 4.png",
        ),
    }


READERS = ("imagefolder", "csv", "csv-splits", "split-list")


@pytest.mark.parametrize("reader", READERS)
def test_truncated_png_named_by_every_reader(tmp_path: Path, reader: str) -> None:
    call, rel = _reader_cases(tmp_path, bad=True)[reader]
    with pytest.raises(UserError, match=rf"cannot read image {re.escape(rel)} .*truncated"):
        call(None)


@pytest.mark.parametrize("reader", READERS)
def test_progress_reports_every_image_in_order(tmp_path: Path, reader: str) -> None:
    call, _ = _reader_cases(tmp_path, bad=False)[reader]
    calls: list[tuple[int, int, int]] = []
    out = call(lambda done, total: calls.append((done, total, threading.get_ident())))
    # (0, 5) first, then one call per image, counting up to (5, 5), all on the caller's thread
    assert [(d, t) for d, t, _ in calls] == [(i, 5) for i in range(6)]
    assert {ident for _, _, ident in calls} == {threading.get_ident()}
    # image folders order by class (zeta first), the other readers by listing
    train = [10, 30, 20, 40] if reader == "imagefolder" else [10, 20, 30, 40]
    assert grey_levels(out["train"]) == train
    assert grey_levels(out["test"]) == [50]


def test_threaded_decoding_keeps_listed_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = list(range(10, 170, 10))  # 16 images, more than the pool has threads
    lines = []
    for i, v in enumerate(values):
        png(tmp_path / "images" / f"{i:02d}.png", v)
        lines.append(f"{i:02d}.png {i % 2}")
    lines.reverse()  # file order, not name order
    # earlier-listed images decode slower, so they finish out of order whenever threads overlap
    decode = decoding._decode
    delay = {f"images/{i:02d}.png": 0.002 * i for i in range(len(values))}
    finished: list[str] = []

    def slow_decode(root: Path, rel: str, size: int, grayscale: bool | None) -> np.ndarray:
        time.sleep(delay[rel])
        finished.append(rel)
        return decode(root, rel, size, grayscale)

    monkeypatch.setattr(decoding, "_decode", slow_decode)
    files = {"train": lines_file(tmp_path / "t.txt", lines)}
    out = read_split_lists(tmp_path, files, CLASSES, size=8, multilabel=False)["train"]
    assert grey_levels(out) == values[::-1]
    assert out.labels.tolist() == [i % 2 for i in range(len(values))][::-1]
    assert out.paths == [f"images/{i:02d}.png" for i in range(len(values))][::-1]
    if (os.cpu_count() or 1) > 1:
        assert finished != out.paths  # the pool really ran images concurrently


# ---------------------------------------------------------------- MedMNIST npz


def medmnist_arrays(
    *, rgb: bool = False, multilabel: bool = False, side: int = 6
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        shape = (n, side, side, 3) if rgb else (n, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multilabel:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 4), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = rng.integers(0, 4, (n, 1), dtype=np.uint8)
    return arrays


@pytest.mark.parametrize(("rgb", "multilabel"), [(False, False), (True, False), (False, True)])
def test_npz_reads_medmnist_layout(tmp_path: Path, rgb: bool, multilabel: bool) -> None:
    arrays = medmnist_arrays(rgb=rgb, multilabel=multilabel)
    path = tmp_path / "pathmnist.npz"
    np.savez_compressed(path, **arrays)
    out = read_medmnist_npz(path, num_classes=4, multilabel=multilabel)
    assert set(out) == set(SPLITS)
    for split in SPLITS:
        part, images = out[split], arrays[f"{split}_images"]
        assert part.images.dtype == np.uint8
        assert part.images.shape == (len(images), 6, 6, 3 if rgb else 1)
        assert np.array_equal(part.images, images if rgb else images[..., None])
        assert part.paths == [f"{split}[{i}]" for i in range(len(images))]
        labels = arrays[f"{split}_labels"]
        if multilabel:
            assert part.labels.dtype == np.float32 and part.labels.shape == (len(images), 4)
            assert np.array_equal(part.labels, labels)
        else:
            assert part.labels.dtype == np.int64 and part.labels.tolist() == labels[:, 0].tolist()


def _npz_mutations() -> list:
    def drop(a):
        del a["val_labels"]

    def short(a):
        a["test_labels"] = a["test_labels"][:2]

    def high(a):
        a["train_labels"][3, 0] = 4

    def negative(a):
        a["val_labels"] = a["val_labels"].astype(np.int64) * 0 - 1

    def floats(a):
        a["train_images"] = a["train_images"].astype(np.float32)

    def wide(a):
        a["train_labels"] = np.zeros((5, 3), np.uint8)

    return [
        (drop, False, r"missing array\(s\) \['val_labels'\]; present: \['test_images', "),
        (short, False, r"test: 3 images but 2 labels"),
        (high, False, r"train_labels range over 0\.\.4; expected class indices 0\.\.3"),
        (negative, False, r"val_labels range over -1\.\.-1"),
        (floats, False, r"train_images has dtype float32; expected uint8"),
        (wide, False, r"train_labels has shape \(5, 3\); expected \[N, 1\]"),
        (wide, True, r"train_labels has shape \(5, 3\); expected \[N, 4\]"),
    ]


@pytest.mark.parametrize(("mutate", "multilabel", "message"), _npz_mutations())
def test_npz_errors_name_the_file(tmp_path: Path, mutate, multilabel: bool, message: str) -> None:
    arrays = medmnist_arrays(multilabel=multilabel)
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=re.escape(str(path)) + r".*" + message):
        read_medmnist_npz(path, num_classes=4, multilabel=multilabel)


def test_npz_multilabel_values_must_be_0_or_1(tmp_path: Path) -> None:
    arrays = medmnist_arrays(multilabel=True)
    arrays["test_labels"][0, 0] = 2
    path = tmp_path / "chestmnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=r"chestmnist\.npz: test_labels holds values other than"):
        read_medmnist_npz(path, num_classes=4, multilabel=True)


def test_npz_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"MedMNIST file .*none\.npz not found"):
        read_medmnist_npz(tmp_path / "none.npz", num_classes=4, multilabel=False)
    text = tmp_path / "text.npz"
    text.write_text("<html>rate limited</html>")  # what a failed download may leave
    with pytest.raises(UserError, match=r"text\.npz is not a \.npz \(zip\) archive"):
        read_medmnist_npz(text, num_classes=4, multilabel=False)
    cut = tmp_path / "cut.npz"
    np.savez(cut, **medmnist_arrays())
    cut.write_bytes(cut.read_bytes()[:-100])  # interrupted download: no zip directory
    with pytest.raises(UserError, match=r"cut\.npz is not a \.npz \(zip\) archive, or it is trunc"):
        read_medmnist_npz(cut, num_classes=4, multilabel=False)


def test_npz_image_size_reads_only_the_header(tmp_path: Path) -> None:
    grey, rgb = tmp_path / "grey.npz", tmp_path / "rgb.npz"
    np.savez(grey, **medmnist_arrays(side=6))
    np.savez(rgb, **medmnist_arrays(rgb=True, side=7))
    assert npz_image_size(grey) == 6 and npz_image_size(rgb) == 7
    # a header announcing 90k RGB images of 224 px (13 GB) and no pixels at all: loading the
    # array would fail, reading the header gives the size
    header = io.BytesIO()  # the writer puts the magic string in front
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (90000, 224, 224, 3)}
    )
    big = tmp_path / "pathmnist_224.npz"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("train_images.npy", header.getvalue())  # magic + header only
    assert npz_image_size(big) == 224
    assert npz_image_size(tmp_path / "absent.npz") is None
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert npz_image_size(tmp_path / "junk.npz") is None


# ---------------------------------------------------------------- MedMNIST download


def fake_medmnist(monkeypatch: pytest.MonkeyPatch, *, fail: str | None = None) -> list[dict]:
    """A stand-in `medmnist` package (v3 API) that records its calls and writes the file."""
    calls: list[dict] = []

    class PathMNIST:
        def __init__(self, *, split: str, download: bool, root: str, size: int) -> None:
            calls.append({"split": split, "download": download, "root": root, "size": size})
            if fail:
                raise RuntimeError(fail)
            name = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
            np.savez(Path(root) / name, **medmnist_arrays())

    module = types.ModuleType("medmnist")
    module.INFO = {"pathmnist": {"python_class": "PathMNIST"}}  # type: ignore[attr-defined]
    module.PathMNIST = PathMNIST  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medmnist", module)
    return calls


@pytest.mark.parametrize(("size", "name"), [(28, "pathmnist.npz"), (64, "pathmnist_64.npz")])
def test_download_medmnist_calls_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, name: str
) -> None:
    calls = fake_medmnist(monkeypatch)
    root = tmp_path / "new" / "root"  # created: medmnist refuses a missing root
    path = download_medmnist("pathmnist", size, root)
    assert path == root / name and path.is_file()
    assert calls == [{"split": "test", "download": True, "root": str(root), "size": size}]
    assert len(read_medmnist_npz(path, num_classes=4, multilabel=False)["train"]) == 5


def test_download_medmnist_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_medmnist(monkeypatch, fail="\n    Automatic download failed! Please download it\n")
    with pytest.raises(UserError) as info:
        download_medmnist("pathmnist", 64, tmp_path)
    text = str(info.value)
    assert "Automatic download failed! Please download it" in text  # the cause, on one line
    assert "pathmnist_64.npz" in text and "https://zenodo.org/records/10519652" in text
    with pytest.raises(UserError, match=r"unknown MedMNIST flag 'nomnist'; known: pathmnist"):
        download_medmnist("nomnist", 28, tmp_path)

    monkeypatch.setitem(sys.modules, "medmnist", None)  # import medmnist -> ImportError
    with pytest.raises(UserError) as info:
        download_medmnist("pathmnist", 28, tmp_path)
    text = str(info.value)
    assert "pip install medmnist" in text
    assert "https://zenodo.org/records/10519652" in text and str(tmp_path) in text
