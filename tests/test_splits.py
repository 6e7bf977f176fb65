"""Few-shot sampling and validation carving (bench/splits.py): exact counts, seeding, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import UserError
from bench.splits import carve_val, sample_shots, split_summary

FAST = settings(max_examples=25, deadline=None)
CLASSES3 = ("normal", "tumor", "cyst")


def _labels_with_counts(counts: list[int], seed: int = 0) -> np.ndarray:
    """Single-label array with counts[c] images of class c, in a shuffled order."""
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def _assert_index_array(idx: np.ndarray, n: int) -> None:
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0), "indices must be sorted and unique"
    assert idx.size == 0 or (idx[0] >= 0 and idx[-1] < n)


# --- single-label sample_shots ----------------------------------------------------------------


@FAST
@given(
    extra=st.lists(st.integers(0, 12), min_size=2, max_size=6),
    shots=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    task=st.sampled_from(["multiclass", "ordinal"]),
)
def test_exactly_k_per_class(extra: list[int], shots: int, seed: int, task: str) -> None:
    y = _labels_with_counts([shots + e for e in extra], seed=seed % 97)
    classes = [f"c{i}" for i in range(len(extra))]
    idx = sample_shots(y, shots, seed, task=task, classes=classes)
    _assert_index_array(idx, len(y))
    assert np.bincount(y[idx], minlength=len(extra)).tolist() == [shots] * len(extra)


def test_one_shot_binary_is_one_image_per_class() -> None:
    y = _labels_with_counts([30, 7])
    idx = sample_shots(y, 1, 3, task="binary", classes=("negative", "positive"))
    assert len(idx) == 2 and sorted(y[idx].tolist()) == [0, 1]


def test_same_seed_same_indices_different_seed_differs() -> None:
    y = _labels_with_counts([100, 100, 100])
    a = sample_shots(y, 10, 7, task="multiclass", classes=CLASSES3)
    b = sample_shots(y, 10, 7, task="multiclass", classes=CLASSES3)
    c = sample_shots(y, 10, 8, task="multiclass", classes=CLASSES3)
    np.testing.assert_array_equal(a, b)
    # 30 of 300 images: two seeds agreeing would be a seeding bug, not chance.
    assert set(a.tolist()) != set(c.tolist())


def test_global_numpy_seed_neither_read_nor_consumed() -> None:
    y = _labels_with_counts([40, 40, 40])
    np.random.seed(0)
    a = sample_shots(y, 5, 11, task="multiclass", classes=CLASSES3)
    t_a = carve_val(y, 0.2, 11, task="multiclass")
    after = np.random.random()
    np.random.seed(12345)
    b = sample_shots(y, 5, 11, task="multiclass", classes=CLASSES3)
    t_b = carve_val(y, 0.2, 11, task="multiclass")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(t_a[1], t_b[1])
    np.random.seed(0)
    assert np.random.random() == after, "the global RNG stream was advanced"


def test_same_seed_same_indices_in_a_fresh_process() -> None:
    code = textwrap.dedent(
        """
        import json, numpy as np
        from bench.splits import carve_val, sample_shots
        y = np.random.default_rng(0).permutation(np.repeat(np.arange(3), [100, 100, 100]))
        m = (np.random.default_rng(1).random((200, 4)) < 0.3).astype(np.float32)
        out = {
            "single": sample_shots(y, 10, 5, task="multiclass", classes=["a", "b", "c"]).tolist(),
            "multi": sample_shots(m, 3, 5, task="multilabel", classes=list("wxyz")).tolist(),
            "val": carve_val(y, 0.2, 5, task="multiclass")[1].tolist(),
        }
        print(json.dumps(out))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    theirs = json.loads(res.stdout)
    y = _labels_with_counts([100, 100, 100], seed=0)
    m = (np.random.default_rng(1).random((200, 4)) < 0.3).astype(np.float32)
    assert theirs["single"] == sample_shots(y, 10, 5, task="multiclass", classes="abc").tolist()
    assert theirs["multi"] == sample_shots(m, 3, 5, task="multilabel", classes="wxyz").tolist()
    assert theirs["val"] == carve_val(y, 0.2, 5, task="multiclass")[1].tolist()


# --- multi-label sample_shots -----------------------------------------------------------------


@FAST
@given(
    n_labels=st.integers(1, 6),
    shots=st.integers(1, 4),
    n_extra=st.integers(0, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_multilabel_n_times_k_distinct_images(
    n_labels: int, shots: int, n_extra: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Each label owns `shots` rows positive for it alone, which no other label's draw can take,
    # so the rare-first draw must succeed; the extra rows are random multi-hot noise.
    private = np.repeat(np.eye(n_labels, dtype=np.int64), shots, axis=0)
    extra = (rng.random((n_extra, n_labels)) < 0.4).astype(np.int64)
    y = rng.permutation(np.concatenate([private, extra]))
    classes = [f"l{i}" for i in range(n_labels)]
    idx = sample_shots(y, shots, seed, task="multilabel", classes=classes)
    _assert_index_array(idx, len(y))
    assert len(idx) == n_labels * shots
    assert (y[idx].sum(axis=0) >= shots).all()


def _greedy_reference(y: np.ndarray, shots: int, seed: int, order: list[int]) -> list[int] | None:
    """Visit labels in ``order``, drawing ``shots`` unpicked positives each; None on running out."""
    rng = np.random.default_rng(seed)
    taken = np.zeros(len(y), dtype=bool)
    for label in order:
        cand = np.flatnonzero((y[:, label] == 1) & ~taken)
        if len(cand) < shots:
            return None
        taken[rng.choice(cand, size=shots, replace=False)] = True
    return np.flatnonzero(taken).tolist()


def test_multilabel_rare_labels_are_drawn_first() -> None:
    # Label "effusion" (index 0, 6 positives) is common; "nodule" (index 1) is positive only on
    # rows 0 and 1, which are also effusion rows. Drawing effusion first often takes row 0 or 1
    # and leaves nodule one image short; drawing nodule first always works.
    y = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [1, 0], [1, 0], [0, 0]])
    classes = ("effusion", "nodule")
    assert any(_greedy_reference(y, 2, s, order=[0, 1]) is None for s in range(10))
    for seed in range(10):
        idx = sample_shots(y, 2, seed, task="multilabel", classes=classes)
        assert len(idx) == 4
        assert {0, 1} <= set(idx.tolist())
        assert set(idx.tolist()) - {0, 1} <= {2, 3, 4, 5}


def test_multilabel_ties_visit_lower_label_index_first() -> None:
    # "x" and "y" both have 3 positives and share rows 0 and 1; "z" (6 positives) comes last.
    # Which of x, y draws first changes the result, so the sampler must match the x-first
    # reference for every seed, and the y-first order must give a different draw for some seed.
    y = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]])
    classes = ("x", "y", "z")
    for seed in range(10):
        got = sample_shots(y, 1, seed, task="multilabel", classes=classes).tolist()
        assert got == _greedy_reference(y, 1, seed, order=[0, 1, 2])
    assert any(
        _greedy_reference(y, 1, s, order=[0, 1, 2]) != _greedy_reference(y, 1, s, order=[1, 0, 2])
        for s in range(10)
    )


def test_multilabel_too_few_positives_names_the_label() -> None:
    y = np.zeros((20, 3), dtype=np.float32)
    y[:10, 0] = 1
    y[10:12, 1] = 1
    y[12:20, 2] = 1
    with pytest.raises(UserError, match=r"label 'mass' has 2 positive.*--shots 2 or fewer"):
        sample_shots(y, 5, 0, task="multilabel", classes=("effusion", "mass", "edema"))


def test_multilabel_shared_images_failure_names_label_and_a_k_that_works() -> None:
    # b (2 positives) takes rows 0 and 1; a then has only row 2 left for 2 shots.
    y = np.array([[1, 1], [1, 1], [1, 0]])
    with pytest.raises(UserError, match=r"label 'a' has 3 .* only 1 not already .*--shots 1 or"):
        sample_shots(y, 2, 0, task="multilabel", classes=("a", "b"))
    assert len(sample_shots(y, 1, 0, task="multilabel", classes=("a", "b"))) == 2


# --- errors -----------------------------------------------------------------------------------


def test_class_with_too_few_images_is_named_with_counts() -> None:
    y = _labels_with_counts([9, 2, 1])
    with pytest.raises(UserError) as err:
        sample_shots(y, 3, 0, task="multiclass", classes=CLASSES3)
    msg = str(err.value)
    assert "'tumor' has 2" in msg and "'cyst' has 1" in msg and "normal" not in msg
    assert "--shots 1 or fewer" in msg


@pytest.mark.parametrize("shots", [0, -1])
def test_shots_below_one_rejected(shots: int) -> None:
    with pytest.raises(UserError, match="shots must be an integer >= 1"):
        sample_shots(_labels_with_counts([5, 5, 5]), shots, 0, task="multiclass", classes=CLASSES3)


def test_wrong_label_shapes_rejected() -> None:
    y = _labels_with_counts([5, 5, 5])
    with pytest.raises(UserError, match=r"shape \[N\]"):
        sample_shots(y[:, None], 1, 0, task="multiclass", classes=CLASSES3)
    with pytest.raises(UserError, match=r"shape \[N, 3\]"):
        sample_shots(y, 1, 0, task="multilabel", classes=CLASSES3)
    with pytest.raises(UserError, match=r"shape \[N, 3\]"):
        sample_shots(np.ones((6, 2)), 1, 0, task="multilabel", classes=CLASSES3)
    with pytest.raises(UserError, match="must be 0 or 1"):
        sample_shots(np.full((6, 3), -1), 1, 0, task="multilabel", classes=CLASSES3)
    with pytest.raises(UserError, match=r"0\.\.2"):
        sample_shots(np.array([0, 1, 3]), 1, 0, task="multiclass", classes=CLASSES3)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_val_fraction_outside_open_interval_rejected(fraction: float) -> None:
    with pytest.raises(UserError, match="val_fraction must be between 0 and 1"):
        carve_val(_labels_with_counts([5, 5]), fraction, 0, task="binary")


# --- carve_val --------------------------------------------------------------------------------


def test_carve_val_hand_computed_counts() -> None:
    # fraction 0.25 of [10, 4, 1, 2, 3, 20] images: 2.5 -> 3 (half-up), 1.0 -> 1, the single image
    # stays in train, 0.5 -> 1, 0.75 -> 1, 5.0 -> 5.
    y = _labels_with_counts([10, 4, 1, 2, 3, 20])
    train, val = carve_val(y, 0.25, 0, task="multiclass")
    assert np.bincount(y[val], minlength=6).tolist() == [3, 1, 0, 1, 1, 5]
    assert np.bincount(y[train], minlength=6).tolist() == [7, 3, 1, 1, 2, 15]


def test_carve_val_keeps_one_in_train_and_one_in_val() -> None:
    y = _labels_with_counts([2, 10, 20, 5])
    # 0.9 of [2, 10, 20, 5]: 1.8 -> 2 and 4.5 -> 5 are clamped to n - 1; 9 and 18 stand.
    train, val = carve_val(y, 0.9, 0, task="multiclass")
    assert np.bincount(y[val], minlength=4).tolist() == [1, 9, 18, 4]
    assert np.bincount(y[train], minlength=4).tolist() == [1, 1, 2, 1]
    # 0.01 of each: 0.02 ... 0.2 round to 0, raised to one image in val.
    _, val = carve_val(y, 0.01, 0, task="multiclass")
    assert np.bincount(y[val], minlength=4).tolist() == [1, 1, 1, 1]


def test_carve_val_single_image_class_stays_in_train() -> None:
    y = np.array([0, 0, 0, 0, 1, 2, 2])
    for seed in range(5):
        train, val = carve_val(y, 0.5, seed, task="multiclass")
        assert 4 in train.tolist() and 4 not in val.tolist()


@FAST
@given(
    labels=st.lists(st.integers(0, 4), min_size=0, max_size=60),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_carve_val_disjoint_cover_sorted(labels: list[int], fraction: float, seed: int) -> None:
    y = np.array(labels, dtype=np.int64)
    train, val = carve_val(y, fraction, seed, task="multiclass")
    _assert_index_array(train, len(y))
    _assert_index_array(val, len(y))
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(len(y)))
    for c in np.unique(y):
        n, n_val = int((y == c).sum()), int((y[val] == c).sum())
        assert (n_val == 0) if n == 1 else (1 <= n_val <= n - 1)


def test_carve_val_deterministic_and_seed_dependent() -> None:
    y = _labels_with_counts([100, 100])
    a = carve_val(y, 0.2, 3, task="binary")
    b = carve_val(y, 0.2, 3, task="binary")
    c = carve_val(y, 0.2, 4, task="binary")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert set(a[1].tolist()) != set(c[1].tolist())


def test_carve_val_multilabel_strata_by_rarest_positive_label() -> None:
    # Columns A, B, C have 10, 2, 4 positives, so rarest-first is B, C, A. Strata: A-only rows (6),
    # A+C rows (stratum C, 4), B rows (2), all-negative rows (3). Fraction 0.5 -> 3, 2, 1, 2 to val.
    groups = {
        "a_only": ([1, 0, 0], 6, 3),
        "a_and_c": ([1, 0, 1], 4, 2),
        "b": ([0, 1, 0], 2, 1),
        "negative": ([0, 0, 0], 3, 2),
    }
    rows = [row for row, n, _ in groups.values() for _ in range(n)]
    order = np.random.default_rng(0).permutation(len(rows))
    y = np.array(rows, dtype=np.float32)[order]
    for seed in range(3):
        train, val = carve_val(y, 0.5, seed, task="multilabel")
        assert sorted([*train.tolist(), *val.tolist()]) == list(range(len(y)))
        for row, _, want in groups.values():
            in_val = int((y[val] == np.array(row)).all(axis=1).sum())
            assert in_val == want, (row, in_val)


def test_carve_val_multilabel_ties_go_to_lower_label_index() -> None:
    # X and Y both have 2 positives; row 0 is positive for both and joins X's stratum (lower
    # index), so X's stratum is {0, 1} (one to val) and row 2 is alone in Y's stratum (train).
    y = np.array([[1, 1], [1, 0], [0, 1]])
    for seed in range(5):
        train, val = carve_val(y, 0.5, seed, task="multilabel")
        assert 2 in train.tolist() and len(val) == 1 and val[0] in (0, 1)


# --- split_summary ----------------------------------------------------------------------------


def test_split_summary_single_label() -> None:
    y = np.array([0, 2, 2, 1, 0, 2, 2])
    got = split_summary(y, np.array([0, 2, 3, 5, 6]), task="multiclass", classes=CLASSES3)
    assert got == {"normal": 1, "tumor": 1, "cyst": 3}
    assert list(got) == list(CLASSES3)
    assert split_summary(y, np.array([1]), task="multiclass", classes=CLASSES3) == {
        "normal": 0,
        "tumor": 0,
        "cyst": 1,
    }


def test_split_summary_multilabel_counts_positives() -> None:
    y = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=np.float32)
    got = split_summary(y, np.array([0, 2, 3]), task="multilabel", classes=("a", "b", "c"))
    assert got == {"a": 2, "b": 1, "c": 2}


def test_unknown_task_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not one of"):
        sample_shots(np.array([0, 1]), 1, 0, task="segmentation", classes=("a", "b"))
