"""Image-folder and CSV-manifest readers (`bench.readers`), on tiny PNGs written per test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.errors import UserError
from bench.readers import read_csv_manifest, read_imagefolder

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
