"""Data input found unchecked by a hostile-input audit: each case ends in one UserError that
names the file (and key, class, array or link) and says what to do, before any training.

Cases covered, each asserting its message:
  1. a MedMNIST npz with a class that has no training image (`bench data check` said ok)
                                            test_npz_class_without_training_image_is_refused
  2. card [reader] values of the wrong type (manifest = 42, image_column = [..], splits = "x",
     onehot, ignore_columns, per-split tables, files, shot_files), [medmnist] values of the wrong
     type, and unknown keys at the top level, in [reader], [reader.splits.<split>], the split
     tables and [medmnist], each naming the closest valid key  test_card_value_is_refused
  3. an npz whose header declares an array larger than the memory available (93 GiB, and a
     petabyte on any machine)              test_npz_declaring_more_than_memory_is_refused
  4. image_size above 4096 (4096 itself loads)   test_image_size_has_an_upper_bound
  5. an ImageFolder image that is a symlink out of the dataset folder (a link inside it still
     reads)                                 test_imagefolder_symlink_out_is_refused
  6. a csv card's one [reader] manifest path leading out of the dataset folder ('..', absolute)
                                            test_single_manifest_path_is_confined
"""

from __future__ import annotations

import io
import re
import types
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.catalog import get_card
from bench.cli import app
from bench.data import load_dataset
from bench.data_check import check_dataset
from bench.errors import UserError
from bench.formats.imagefolder import read_imagefolder
from bench.formats.medmnist import read_medmnist_npz
from tests.conftest import write_medmnist_npz

OUTSIDE = "paths must stay inside the dataset folder"
HEAD = 'name = "mine"\ntitle = "t"\nprimary_metric = "accuracy"\nclasses = ["a", "b"]\n'
FOLDER = HEAD + 'task = "multiclass"\nformat = "imagefolder"\nimage_size = 16\n'
CSV = HEAD + 'task = "multiclass"\nformat = "csv"\nimage_size = 16\n'
LISTS = HEAD + 'task = "multiclass"\nformat = "split-list"\nimage_size = 16\n'
MANIFEST = '[reader]\nmanifest = "labels.csv"\n'
SPLIT_TABLE = '[reader.splits.train]\nmanifest = "train.csv"\n'


def png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


def write_card(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.toml"
    path.write_text(body)
    return path


# ------------------------------------------------------------ 1. npz class without training image


def test_npz_class_without_training_image_is_refused(tiny_data_root: Path) -> None:
    path = tiny_data_root / "pneumoniamnist.npz"
    write_medmnist_npz(path, classes=1)  # every label 0: no 'pneumonia' image anywhere
    message = f"{path}: no training image for class(es) ['pneumonia']; train_labels never holds"
    with pytest.raises(UserError, match=re.escape(message)):
        check_dataset(get_card("pneumoniamnist"), tiny_data_root)
    res = CliRunner().invoke(
        app,
        ["data", "check", "pneumoniamnist", "--data-root", str(tiny_data_root), "--no-progress"],
        env={"COLUMNS": "400"},
    )
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith("error: ") and message in res.stderr


# ---------------------------------------------------------- 2 and 4. card keys, types and values


CARD_CASES = [
    # [reader] values of the wrong type
    (CSV + "[reader]\nmanifest = 42\n", "[reader] manifest must be a string, got 42"),
    (CSV + MANIFEST + 'image_column = ["a", "b"]\n',
     "[reader] image_column must be a string, got ['a', 'b']"),
    (CSV + '[reader]\nsplits = "x"\n', "[reader] splits must be a table, got 'x'"),
    (CSV + MANIFEST + 'onehot = "yes"\n', "[reader] onehot must be true or false, got 'yes'"),
    (CSV + MANIFEST + "ignore_columns = [1]\n",
     "[reader] ignore_columns must be a list of column names"),
    (CSV + '[reader.splits]\ntrain = "train.csv"\n',
     "[reader.splits] train must be a table with manifest = '<labels.csv>'"),
    (CSV + "[reader.splits.train]\nimages = \"img\"\n",
     "[reader.splits] train must be a table with manifest = '<labels.csv>'"),
    (CSV + SPLIT_TABLE + "images = 3\n", "[reader.splits.train] images must be a string, got 3"),
    (LISTS + "[reader.files]\ntrain = 3\n", "[reader.files] train must be a string, got 3"),
    (LISTS + '[reader]\nshot_files = "x.txt"\n', "[reader] shot_files must be a table, got 'x.txt'"),
    (FOLDER + "[medmnist]\nsizes = 5\n", "[medmnist] sizes must be a list, got 5"),
    (FOLDER + "[medmnist]\nsizes = [28, 100]\n",
     "[medmnist] sizes must be a list drawn from [28, 64, 128, 224], got [28, 100]"),
    # unknown keys, with the closest valid one
    (FOLDER + "val_fracton = 0.3\n", "unknown key 'val_fracton'; did you mean 'val_fraction'?"),
    (FOLDER + "zzz = 1\n", "unknown key 'zzz'; valid: name, title, task, format"),
    (CSV + MANIFEST + 'image_colum = "x"\n',
     "[reader] unknown key 'image_colum' for format csv; did you mean 'image_column'?"),
    (FOLDER + '[reader]\nmanifest = "x.csv"\n',
     "[reader] unknown key 'manifest' for format imagefolder; remove it (no keys are read here)"),
    (CSV + '[reader.splits.trian]\nmanifest = "train.csv"\n',
     "[reader.splits] unknown key 'trian'; did you mean 'train'?"),
    (CSV + SPLIT_TABLE + 'imges = "img"\n',
     "[reader.splits.train] unknown key 'imges'; did you mean 'images'?"),
    (LISTS + '[reader.files]\ntest = "t.txt"\nvall = "v.txt"\n',
     "[reader.files] unknown key 'vall'; did you mean 'val'?"),
    (FOLDER + '[medmnist]\nflg = "x"\n', "[medmnist] unknown key 'flg'; did you mean 'flag'?"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), CARD_CASES, ids=[m for _, m in CARD_CASES])
def test_card_value_is_refused(tmp_path: Path, monkeypatch, body: str, message: str) -> None:
    path = write_card(tmp_path / "cards", body)
    monkeypatch.setenv("MEDPEFT_CARDS", str(path.parent))
    with pytest.raises(UserError, match=re.escape(f"dataset card {path}: {message}")):
        get_card("mine")


def test_image_size_has_an_upper_bound(tmp_path: Path, monkeypatch) -> None:
    path = write_card(tmp_path / "cards", FOLDER.replace("image_size = 16", "image_size = 100000"))
    monkeypatch.setenv("MEDPEFT_CARDS", str(path.parent))
    message = (
        f"dataset card {path}: image_size must be at most 4096, got 100000; it is the side every "
        "image is resized to"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        get_card("mine")
    other = write_card(tmp_path / "more", FOLDER.replace("image_size = 16", "image_size = 4096"))
    monkeypatch.setenv("MEDPEFT_CARDS", str(other.parent))
    assert get_card("mine").image_size == 4096


# ------------------------------------------------------------ 3. npz declaring a huge array


def huge_npz(path: Path, shape: tuple[int, ...]) -> Path:
    """A valid MedMNIST npz whose train_images member is only a .npy header declaring `shape`."""
    write_medmnist_npz(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "train_images"}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train_images.npy", header.getvalue())  # magic + header, no pixels
        for name, array in arrays.items():
            data = io.BytesIO()
            np.save(data, array)
            zf.writestr(f"{name}.npy", data.getvalue())
    return path


def test_npz_declaring_more_than_memory_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = huge_npz(tmp_path / "pneumoniamnist.npz", (2_000_000, 224, 224))  # 93.5 GiB
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: types.SimpleNamespace(available=8 * 2**30)
    )
    message = (
        f"{path}: array train_images declares shape (2000000, 224, 224) of uint8 = 93.5 GiB "
        "(93.5 GiB for the six arrays), more than the 8.0 GiB of memory available; the file is "
        "corrupt or too large for this machine: re-download it"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        read_medmnist_npz(path, num_classes=2, multilabel=False)
    monkeypatch.undo()
    # a petabyte is more than any machine has: the real memory figure refuses it too
    path = huge_npz(tmp_path / "pneumoniamnist.npz", (2**50,))
    with pytest.raises(UserError, match=r"train_images declares shape \(1125899906842624,\) "):
        load_dataset(get_card("pneumoniamnist"), tmp_path)


# ------------------------------------------------------------ 5. ImageFolder symlink out


def test_imagefolder_symlink_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    png(root / "train" / "a" / "1.png", 10)
    png(root / "train" / "b" / "2.png", 20)
    (root / "train" / "a" / "inside.png").symlink_to(root / "train" / "b" / "2.png")
    assert len(read_imagefolder(root, ["a", "b"], size=8)["train"]) == 3  # a link inside reads
    secret = png(tmp_path / "secret.png", 7)
    (root / "train" / "b" / "link.png").symlink_to(secret)
    message = f"{root / 'train'}: symlinked image 'train/b/link.png' points outside the data root"
    with pytest.raises(UserError, match=re.escape(message) + ".*" + OUTSIDE):
        read_imagefolder(root, ["a", "b"], size=8)


# ------------------------------------------------------------ 6. the one CSV manifest is confined


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_single_manifest_path_is_confined(tmp_path: Path, monkeypatch, kind: str) -> None:
    root = tmp_path / "data"
    png(root / "mine" / "x.png", 10)
    png(root / "mine" / "y.png", 20)
    outside = root / "labels.csv"  # beside the dataset folder; it lists images inside it
    outside.write_text("image,label,split\nx.png,a,train\ny.png,b,train\nx.png,a,test\n")
    value = {"dotdot": "../labels.csv", "absolute": str(outside)}[kind]
    path = write_card(tmp_path / "cards", CSV + f"[reader]\nmanifest = {value!r}\n")
    monkeypatch.setenv("MEDPEFT_CARDS", str(path.parent))
    message = f"dataset card {path}: [reader] manifest {value!r} points outside the data root"
    with pytest.raises(UserError, match=re.escape(message) + ".*" + OUTSIDE):
        load_dataset(get_card("mine"), root, decoded_cache="off")
