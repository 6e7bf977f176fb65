"""The dataset catalog and readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.cards import DatasetCard
from bench.catalog import data_root, get_card, load_catalog
from bench.data import load_dataset
from bench.errors import UserError
from bench.transforms import prepare_batch
from tests.conftest import SHARED, write_medmnist_npz


def test_catalog_cards_are_complete() -> None:
    cards = load_catalog()
    assert {"demo", "pneumoniamnist"} <= set(cards)
    for card in cards.values():
        assert card.classes, card.name
        assert card.source and card.license, card.name
    from bench.demo import DEMO_CLASSES

    assert cards["demo"].classes == tuple(DEMO_CLASSES)
    assert cards["demo"].synthetic


def test_unknown_dataset_lists_available() -> None:
    with pytest.raises(UserError, match=r"available: .*demo"):
        get_card("chestx")


def test_missing_file_says_where_to_get_it(tmp_path) -> None:
    with pytest.raises(UserError, match=r"pneumoniamnist\.npz not found.*medmnist"):
        load_dataset(get_card("pneumoniamnist"), tmp_path)


def test_medmnist_npz_reader(tmp_path) -> None:
    write_medmnist_npz(tmp_path / "pneumoniamnist.npz", n=(10, 4, 6))
    data = load_dataset(get_card("pneumoniamnist"), tmp_path)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 10, "val": 4, "test": 6}
    train = data.splits["train"]
    assert train.images.shape == (10, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1] * 5
    assert data.fingerprint == load_dataset(get_card("pneumoniamnist"), tmp_path).fingerprint


def test_labels_out_of_range_rejected(tmp_path) -> None:
    write_medmnist_npz(tmp_path / "pneumoniamnist.npz", classes=3)
    with pytest.raises(
        UserError, match=r"train_labels range over 0\.\.2; expected class indices 0\.\.1"
    ):
        load_dataset(get_card("pneumoniamnist"), tmp_path)


def test_data_root_precedence(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDPEFT_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "cli") == tmp_path / "cli"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("MEDPEFT_DATA")
    assert data_root().name == "medpeft-bench"


def test_prepare_batch_gray_to_rgb_resize_normalise() -> None:
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    out = prepare_batch(x, img_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, train=False)
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out, torch.full_like(out, 2.0))  # (1 - 0.5) / 0.25


def test_prepare_batch_flip_is_seeded() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    kw = dict(img_size=4, mean=(0,) * 3, std=(1,) * 3, train=True, augment="flip")
    a = prepare_batch(x, generator=torch.Generator().manual_seed(3), **kw)
    b = prepare_batch(x, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a, b)
    plain = x.float() / 255
    for i in range(2):  # each image is either untouched or mirrored
        assert torch.equal(a[i], plain[i]) or torch.equal(a[i], plain[i].flip(-1))


@pytest.mark.skipif(
    not (SHARED / "data/pneumoniamnist/pneumoniamnist.npz").exists(), reason="../shared data absent"
)
def test_real_pneumoniamnist_copy() -> None:
    data = load_dataset(get_card("pneumoniamnist"), SHARED / "data/pneumoniamnist")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 2428, "val": 270, "test": 468}
    assert set(np.unique(data.splits["test"].labels.numpy())) == {0, 1}


@pytest.mark.skipif(
    not (SHARED / "data/pneumoniamnist/pneumoniamnist.npz").exists(), reason="../shared data absent"
)
def test_real_pneumoniamnist_linear_beats_chance(tmp_path) -> None:
    """`bench run` through the MedMNIST reader on real chest X-rays: a linear probe (on a random
    tiny ViT, since no pretrained weights can be downloaded in CI) is far above chance on test."""
    import json

    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(app, [
        "run", "--methods", "linear", "--datasets", "pneumoniamnist",
        "--data-root", str(SHARED / "data/pneumoniamnist"), "--backbone", "test_vit",
        "--no-pretrained", "--img-size", "32", "--epochs", "3", "--batch-size", "64",
        "--results", str(tmp_path), "--no-progress",
    ], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert rec["status"] == "ok" and rec["dataset"]["sizes"]["test"] == 468
    # chance is AUC 0.5 and, on this class-balanced copy, accuracy ~0.5 (0.858 / 0.784 measured)
    assert rec["metrics"]["test"]["auc"] > 0.7
    assert rec["metrics"]["test"]["accuracy"] > 0.65


def test_card_fields_match_dataclass() -> None:
    assert isinstance(get_card("demo"), DatasetCard)
