"""16-bit greyscale files are mapped to 8 bits by the dataset's bit depth (`bench.formats.images`):
a 12-bit CT/X-ray export keeps ~256 grey levels, one depth holds for every image of the dataset,
and a card's `bit_depth` overrides the depth read from the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.catalog import get_card
from bench.dataset_arrays import read_arrays
from bench.errors import UserError
from bench.formats.imagefolder import read_imagefolder
from bench.formats.images import data_bit_depth

CLASSES = ("a", "b")


def grey16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit greyscale PNG (PIL mode "I;16") holding `pixels` exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.astype(np.uint16))
    assert image.mode == "I;16"
    image.save(path)


def uniform(value: int) -> np.ndarray:
    return np.full((4, 4), value, dtype=np.uint16)


def ramp_set(root: Path, top: int) -> None:
    """A 64x64 ramp over 0..top in train/a, and uniform images 0, 2048 and top elsewhere."""
    ramp = np.linspace(0, top, 64 * 64).round().reshape(64, 64)
    grey16(root / "train" / "a" / "ramp.png", ramp)
    grey16(root / "train" / "b" / "zero.png", uniform(0))
    grey16(root / "test" / "a" / "mid.png", uniform(2048))
    grey16(root / "test" / "b" / "top.png", uniform(top))


def test_12_bit_pngs_fill_the_8_bit_range(tmp_path: Path) -> None:
    ramp_set(tmp_path, 4095)
    out = read_imagefolder(tmp_path, CLASSES, size=64)
    train, test = out["train"].images, out["test"].images
    assert train.dtype == np.uint8 and train.shape == (2, 64, 64, 1)
    # every 12-bit step of 16 lands on its own 8-bit level; /257 left 17 levels
    assert len(np.unique(train[0])) >= 200
    assert train[0].min() == 0 and train[0].max() == 255
    # hand values: v * 255 / 4095, rounded
    assert (train[1] == 0).all()
    assert (test[0] == 128).all()  # 2048 * 255 / 4095 = 127.53
    assert (test[1] == 255).all()


def test_depth_is_the_datasets_not_each_images(tmp_path: Path) -> None:
    # an image that only reaches 1000 is still read at the dataset's 12 bits: 1000 -> 62.27
    grey16(tmp_path / "train" / "a" / "dark.png", uniform(1000))
    grey16(tmp_path / "train" / "b" / "bright.png", uniform(4000))
    grey16(tmp_path / "test" / "a" / "x.png", uniform(2000))
    out = read_imagefolder(tmp_path, CLASSES, size=4)
    assert (out["train"].images[0] == 62).all() and (out["train"].images[1] == 249).all()
    assert (out["test"].images[0] == 125).all()  # 2000 * 255 / 4095 = 124.54


def test_16_bit_data_still_maps_65535_to_255(tmp_path: Path) -> None:
    grey16(tmp_path / "train" / "a" / "top.png", uniform(65535))
    grey16(tmp_path / "train" / "b" / "mid.png", uniform(257 * 100))
    grey16(tmp_path / "test" / "a" / "low.png", uniform(4095))
    out = read_imagefolder(tmp_path, CLASSES, size=4)
    assert (out["train"].images[0] == 255).all() and (out["train"].images[1] == 100).all()
    assert (out["test"].images[0] == 16).all()  # 4095 / 257 = 15.93


def test_8_bit_images_are_unchanged(tmp_path: Path) -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0..252
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a")):
        path = tmp_path / split / cls / "x.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(pixels).save(path)
    out = read_imagefolder(tmp_path, CLASSES, size=8)
    assert np.array_equal(out["train"].images[0, :, :, 0], pixels)


def test_depth_rounds_up_to_a_standard_one() -> None:
    assert [data_bit_depth(v) for v in (0, 255, 256, 1023, 1024, 4095, 4096, 16384, 65535)] == [
        8, 8, 10, 10, 12, 12, 14, 16, 16
    ]  # fmt: skip


CARD = """
name = "ct"
title = "CT exports"
task = "binary"
format = "imagefolder"
primary_metric = "auc"
classes = ["a", "b"]
image_size = 8
"""


def card_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    # a folder per card text: the catalog is cached per set of folders
    cards = tmp_path / f"cards-{extra.strip().replace(' ', '')}"
    cards.mkdir()
    (cards / "ct.toml").write_text(CARD + extra)
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))


def test_card_bit_depth_overrides_the_data(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data" / "ct"
    for split in ("train", "test"):
        for cls, value in (("a", 1023), ("b", 0)):
            grey16(data / split / cls / "x.png", uniform(value))
    card_in(tmp_path, monkeypatch, "bit_depth = 16\n")
    card = get_card("ct")
    assert card.bit_depth == 16
    # the data alone would be read as 10-bit (1023 -> 255); the card says 16: 1023 / 257 = 3.98
    images = read_arrays(card, tmp_path / "data")["test"].images
    assert sorted(np.unique(images).tolist()) == [0, 4]

    card_in(tmp_path, monkeypatch, "bit_depth = 8\n")
    with pytest.raises(UserError, match=r"value 1023, above the card's bit_depth = 8"):
        read_arrays(get_card("ct"), tmp_path / "data")


def test_card_bit_depth_must_be_a_standard_depth(tmp_path: Path, monkeypatch) -> None:
    card_in(tmp_path, monkeypatch, "bit_depth = 11\n")
    with pytest.raises(UserError, match=r"bit_depth must be one of \[8, 10, 12, 14, 16\]"):
        get_card("ct")
