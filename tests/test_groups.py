"""Patient/study groups (`bench.group_splits`): a carved val takes whole groups, few-shot samples
take distinct groups and none from val, manifests name them, `bench data check` flags a group in
two splits; and without groups every split is the one the suite made before groups existed."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cards import DatasetCard
from bench.catalog import get_card
from bench.data import _to_dataset, few_shot, load_dataset
from bench.data_check import check_dataset
from bench.dataset_arrays import read_splits
from bench.decoded_cache import source_identity
from bench.errors import UserError
from bench.formats.csv_manifest import read_csv_manifest
from bench.splits import _n_val, carve_val, sample_shots

PINNED = json.loads((Path(__file__).parent / "splits_pinned.json").read_text())

# ------------------------------------------------------- without groups: today's splits, pinned


def pinned_single() -> np.ndarray:
    rng = np.random.default_rng(123)
    return rng.choice(3, size=90, p=[0.6, 0.3, 0.1])


def pinned_multi() -> np.ndarray:
    rng = np.random.default_rng(456)
    return (rng.random((80, 4)) < [0.5, 0.3, 0.15, 0.08]).astype(np.int64)


def test_splits_without_groups_are_the_pinned_ones() -> None:
    pinned = PINNED["arrays"]
    for task, labels in (("multiclass", pinned_single()), ("multilabel", pinned_multi())):
        for frac in (0.1, 0.25):
            for seed in (0, 1, 7):
                _, val = carve_val(labels, frac, seed, task=task)
                assert val.tolist() == pinned["carve"][f"{task}/{frac}/{seed}"], (task, frac, seed)
        classes = [str(i) for i in range(3 if task == "multiclass" else 4)]
        for k in (1, 3, 5):
            for seed in (0, 1, 2):
                index = sample_shots(labels, k, seed, task=task, classes=classes)
                assert index.tolist() == pinned["shots"][f"{task}/{k}/{seed}"], (task, k, seed)


def write_manifest_dataset(folder: Path, *, groups: bool) -> None:
    """48 distinct 8x8 greys; every third is class b; 36 train, 12 test; patients of 4 images."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,label,split" + (",group" if groups else "")]
    for i in range(48):
        Image.fromarray(np.full((8, 8), i * 5, np.uint8)).save(folder / f"img_{i:02d}.png")
        label = "b" if i % 3 == 0 else "a"
        split = "train" if i < 36 else "test"
        lines.append(f"img_{i:02d}.png,{label},{split}" + (f",p{i // 4}" if groups else ""))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def manifest_card(**reader: str) -> DatasetCard:
    return DatasetCard(
        name="m", title="t", task="binary", format="csv", primary_metric="auc",
        classes=("a", "b"), image_size=8, val_fraction=0.2,
        reader={"manifest": "labels.csv", **reader},
    )  # fmt: skip


def test_manifest_without_groups_keeps_its_pinned_val_shots_and_fingerprint(
    tmp_path: Path,
) -> None:
    write_manifest_dataset(tmp_path / "m", groups=False)
    card = manifest_card()
    data = _to_dataset(card, *read_splits(card, tmp_path, None))
    pinned = PINNED["manifest"]
    assert data.splits["val"].paths == pinned["val"]
    assert data.splits["train"].paths == pinned["train"]
    assert data.protocol == pinned["protocol"]  # no group keys added
    assert data.fingerprint == pinned["fingerprint"]
    assert data.splits["train"].groups is None
    for key, indices in pinned["shots"].items():
        k, seed = map(int, key.split("/"))
        view = few_shot(data, k, seed, tmp_path)
        assert view.protocol["train_indices"] == indices
        assert "train_groups" not in view.protocol


# ------------------------------------------------------------------------------ carving


def grouped_pool(seed: int, multilabel: bool = False) -> tuple[np.ndarray, list[str]]:
    """60-120 images in patients of 1-6 images; a patient's images mostly share a class."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    patient = 0
    while len(groups) < rng.integers(60, 120):
        size = int(rng.integers(1, 7))
        base = int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        for _ in range(size):
            if multilabel:
                row = (rng.random(4) < [0.5, 0.3, 0.15, 0.08]).astype(np.int64)
                row[base] = 1
                labels.append(row)
            else:
                labels.append(base if rng.random() < 0.85 else int(rng.integers(3)))
            groups.append(f"P{patient:03d}")
        patient += 1
    return np.asarray(labels), groups


@pytest.mark.parametrize("multilabel", [False, True])
def test_carved_val_takes_whole_groups_keeps_every_image_and_class_balance(
    multilabel: bool,
) -> None:
    task = "multilabel" if multilabel else "multiclass"
    for seed in range(40):
        labels, groups = grouped_pool(seed, multilabel)
        train, val = carve_val(labels, 0.2, seed, task=task, groups=groups)
        # every image kept, once
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
        train_groups = {groups[i] for i in train}
        val_groups = {groups[i] for i in val}
        assert not train_groups & val_groups, seed
        assert val_groups and train_groups
        assert abs(len(val) / len(labels) - 0.2) < 0.1, (seed, len(val), len(labels))
        if not multilabel:
            # per class, val is as near the image-level target as whole patients allow
            largest = max(Counter(groups).values())
            for c in range(3):
                n = int((labels == c).sum())
                got = int((labels[val] == c).sum())
                assert abs(got - _n_val(n, 0.2)) <= 2 * largest, (seed, c, got, n)


def test_carving_by_group_is_seeded_and_moves_one_image_groups_like_images() -> None:
    labels, groups = grouped_pool(3)
    a = carve_val(labels, 0.2, 5, task="multiclass", groups=groups)
    b = carve_val(labels, 0.2, 5, task="multiclass", groups=groups)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], carve_val(labels, 0.2, 6, task="multiclass", groups=groups)[1])
    # one image per patient: the per-class counts equal the image-level carving's
    labels = np.array([0] * 20 + [1] * 7)
    singles = [f"s{i}" for i in range(len(labels))]
    _, by_group = carve_val(labels, 0.2, 0, task="multiclass", groups=singles)
    _, by_image = carve_val(labels, 0.2, 0, task="multiclass")
    assert np.bincount(labels[by_group]).tolist() == np.bincount(labels[by_image]).tolist()


def test_a_class_of_one_patient_stays_in_train_and_two_patients_give_one() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2] * 4)
    groups = [f"a{i}" for i in range(10)] + ["b"] * 3 + ["c1", "c1", "c2", "c2"]
    train, val = carve_val(labels, 0.1, 0, task="multiclass", groups=groups)
    assert 1 not in labels[val].tolist()  # class b is one patient: kept for training
    assert int((labels[val] == 2).sum()) == 2 and int((labels[train] == 2).sum()) == 2


# ------------------------------------------------------------------------------ few-shot


def test_few_shot_takes_k_distinct_groups_per_class_when_there_are_enough() -> None:
    # class 0: 6 patients x 3 images; class 1: 2 patients x 4 images
    labels = np.array([0] * 18 + [1] * 8)
    groups = [f"p{i // 3}" for i in range(18)] + [f"q{i // 4}" for i in range(8)]
    for seed in range(25):
        index = sample_shots(labels, 4, seed, task="multiclass", classes=["a", "b"], groups=groups)
        per_class = {c: [groups[i] for i in index if labels[i] == c] for c in (0, 1)}
        assert len(per_class[0]) == 4 and len(set(per_class[0])) == 4  # 4 distinct of 6
        # only 2 patients: both, then a second image of each before any third
        assert sorted(Counter(per_class[1]).values()) == [2, 2]


def test_few_shot_never_draws_a_group_that_has_images_in_val() -> None:
    labels = np.array([0] * 12 + [1] * 12)
    groups = [f"p{i // 2}" for i in range(24)]
    in_val = ["p0", "p1", "p6", "p7"]
    for seed in range(20):
        index = sample_shots(
            labels, 3, seed, task="binary", classes=["a", "b"], groups=groups,
            exclude_groups=in_val,
        )  # fmt: skip
        assert not {groups[i] for i in index} & set(in_val)
        assert len({groups[i] for i in index}) == 6
    with pytest.raises(UserError, match=r"left out: their group also has images in val"):
        sample_shots(
            labels, 9, 0, task="binary", classes=["a", "b"], groups=groups, exclude_groups=in_val
        )


def test_multilabel_few_shot_spreads_over_groups() -> None:
    groups = [f"p{i // 5}" for i in range(30)]  # 6 patients of 5 images
    apart = np.zeros((30, 2), dtype=np.int64)
    apart[:15, 0] = 1  # label x: p0-p2, label y: p3-p5
    apart[15:, 1] = 1
    shared = np.zeros((30, 2), dtype=np.int64)
    shared[:20, 0] = 1  # x: p0-p3, y: p2-p5
    shared[10:, 1] = 1
    for seed in range(10):
        index = sample_shots(apart, 3, seed, task="multilabel", classes=["x", "y"], groups=groups)
        assert len({groups[i] for i in index}) == 6
        index = sample_shots(shared, 3, seed, task="multilabel", classes=["x", "y"], groups=groups)
        # y's draw takes p4 and p5 (not drawn yet) before a second image of p2 or p3
        counts = Counter(groups[i] for i in index)
        assert {"p4", "p5"} <= set(counts) and len(counts) >= 5 and max(counts.values()) <= 2


# --------------------------------------------------------------------- manifests and loading


def test_manifest_group_column_default_named_missing_and_empty(tmp_path: Path) -> None:
    write_manifest_dataset(tmp_path, groups=True)
    out = read_csv_manifest(tmp_path, tmp_path / "labels.csv", ("a", "b"), size=8)
    assert out["train"].groups[:5] == ["p0", "p0", "p0", "p0", "p1"]
    assert len(out["test"].groups) == 12
    ignored = read_csv_manifest(
        tmp_path, tmp_path / "labels.csv", ("a", "b"), size=8, ignore_columns=["group"]
    )
    assert ignored["train"].groups is None
    text = (tmp_path / "labels.csv").read_text().replace(",group\n", ",patient_id\n", 1)
    (tmp_path / "renamed.csv").write_text(text)
    named = read_csv_manifest(
        tmp_path, tmp_path / "renamed.csv", ("a", "b"), size=8, group_column="patient_id"
    )
    assert named["train"].groups == out["train"].groups
    with pytest.raises(UserError, match=r"no group column 'patient'.*columns present"):
        read_csv_manifest(
            tmp_path, tmp_path / "labels.csv", ("a", "b"), size=8, group_column="patient"
        )
    (tmp_path / "empty.csv").write_text(
        text.replace("img_05.png,a,train,p1", "img_05.png,a,train,")
    )
    with pytest.raises(UserError, match=r"line 7: empty 'patient_id'; give every image"):
        read_csv_manifest(
            tmp_path, tmp_path / "empty.csv", ("a", "b"), size=8, group_column="patient_id"
        )


def test_multilabel_manifest_group_column_is_no_class(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "labels.csv").write_text("image,x,y,group\nx.png,1,0,p1\nx.png,0,1,p2\n")
    out = read_csv_manifest(
        tmp_path, tmp_path / "labels.csv", ("x", "y"), size=8, multilabel=True, split_column=None
    )
    assert out["train"].groups == ["p1", "p2"]
    assert out["train"].labels.tolist() == [[1, 0], [0, 1]]


OLD = 1_600_000_000  # settled files: the decoded cache writes them


@pytest.fixture
def grouped_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Card `pts` (csv, `group_column = "patient_id"`) over `write_manifest_dataset`'s files."""
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "pts.toml").write_text(
        'name = "pts"\ntitle = "t"\nlicense = "t"\nsource = "t"\nlayout = "t"\n'
        'task = "binary"\nformat = "csv"\nprimary_metric = "auc"\nclasses = ["a", "b"]\n'
        'image_size = 8\nval_fraction = 0.2\n[reader]\nmanifest = "labels.csv"\n'
        'group_column = "patient_id"\n'
    )
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    monkeypatch.delenv("MEDPEFT_DECODED_CACHE", raising=False)
    folder = tmp_path / "data" / "pts"
    write_manifest_dataset(folder, groups=True)
    csv = folder / "labels.csv"
    csv.write_text(csv.read_text().replace(",group\n", ",patient_id\n", 1))
    for path in folder.iterdir():
        os.utime(path, (OLD, OLD))
    return tmp_path / "data"


def test_grouped_dataset_loads_carves_samples_and_caches_its_groups(grouped_card: Path) -> None:
    card = get_card("pts")
    data = load_dataset(card, grouped_card)
    train, val = data.splits["train"], data.splits["val"]
    assert not set(train.groups) & set(val.groups)
    assert data.protocol["groups"] == 12  # 9 train patients + 3 test ones
    assert data.protocol["val"]["by_group"] is True
    assert len(train) + len(val) == 36
    view = few_shot(data, 2, 0, grouped_card)
    assert view.protocol["train_groups"] == 4  # 2 shots x 2 classes, 4 distinct patients
    assert not set(view.splits["train"].groups) & set(val.groups)
    cached = load_dataset(card, grouped_card)  # the decoded cache's copy
    assert not cached.splits["train"].images.numpy().flags["OWNDATA"]
    assert cached.splits["train"].groups == train.groups
    assert cached.splits["test"].groups == data.splits["test"].groups
    assert cached.protocol == data.protocol
    # regrouping a patient changes the cache key, as it changes the carved val
    before = source_identity(card, grouped_card)[0]
    csv = grouped_card / "pts" / "labels.csv"
    csv.write_text(csv.read_text().replace("img_00.png,b,train,p0", "img_00.png,b,train,p9"))
    os.utime(csv, (OLD, OLD))
    assert source_identity(card, grouped_card)[0] != before


def test_data_check_flags_a_group_in_train_and_test(grouped_card: Path) -> None:
    csv = grouped_card / "pts" / "labels.csv"
    # p8 (train) and p9 (test) become one patient in both splits
    csv.write_text(csv.read_text().replace(",test,p9", ",test,p8"))
    report = check_dataset(get_card("pts"), grouped_card, shots=[1], split_seeds=[0, 1])
    [warning] = [w for w in report.warnings if "group" in w]
    # p8 is in train, or in the val carved from it
    assert re.match(r"1 group\(s\) have images in both (train|val) and test \(e\.g\. p8\)", warning)
    assert report.protocol["groups"] == 11


def test_data_check_command_reports_the_groups(grouped_card: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(
        app, ["data", "check", "pts", "--data-root", str(grouped_card), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "groups: 12 (patient/study ids" in " ".join(res.output.split())
