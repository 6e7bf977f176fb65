"""Statistics from saved predictions: per-class results, confusion matrices and their figure,
DeLong's test, the test-set bootstrap, and the statistics entry point with a loader."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from sklearn.metrics import roc_auc_score

from bench.metrics import compute_metrics
from bench.report.bootstrap import image_interval, resample_indices
from bench.report.confusion_figure import draw_confusion, row_normalised, write_confusion
from bench.report.delong import delong_aucs, delong_test
from bench.report.per_class import class_scores, confusion, pooled_class_scores
from bench.report.resampled_metrics import resampled_metric
from bench.report.statistics import statistics_report


def one_hot_logits(preds: list[int], c: int) -> np.ndarray:
    lg = np.zeros((len(preds), c))
    lg[np.arange(len(preds)), preds] = 3.0
    return lg


# true 0 0 0 1 1 2 ; predicted 0 0 1 1 2 2
LABELS = np.array([0, 0, 0, 1, 1, 2])
LOGITS = one_hot_logits([0, 0, 1, 1, 2, 2], 3)


def test_per_class_precision_recall_f1_by_hand() -> None:
    t = class_scores(LOGITS, LABELS, "multiclass")
    # class 0: tp 2, fp 0, fn 1 | class 1: tp 1, fp 1, fn 1 | class 2: tp 1, fp 1, fn 0
    assert t["recall"].tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert t["precision"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 2])
    assert t["f1"].tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert t["support"].tolist() == [3, 2, 1]
    # one-vs-rest AUC on the softmax probabilities; logits without ties (exact ties in softmax
    # are at the mercy of rounding)
    noisy = LOGITS + np.random.default_rng(0).normal(scale=0.1, size=LOGITS.shape)
    probs = np.exp(noisy) / np.exp(noisy).sum(axis=1, keepdims=True)
    auc = class_scores(noisy, LABELS, "multiclass")["auc"]
    assert auc.tolist() == pytest.approx(
        [roc_auc_score(np.equal(LABELS, j), probs[:, j]) for j in range(3)]
    )
    absent = class_scores(LOGITS[:5], LABELS[:5], "multiclass")
    assert math.isnan(absent.loc[2, "auc"]) and absent.loc[2, "support"] == 0


def test_confusion_counts_and_pooling_over_seeds() -> None:
    m = confusion(LOGITS, LABELS)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert row_normalised(m)[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    perfect = one_hot_logits(LABELS.tolist(), 3)
    pooled = pooled_class_scores([(LOGITS, LABELS), (perfect, LABELS)], "multiclass", list("abc"))
    assert pooled["class"].tolist() == ["a", "b", "c"] and set(pooled["n_seeds"]) == {2}
    assert pooled["recall"].tolist() == pytest.approx([(2 / 3 + 1) / 2, 0.75, 1.0])
    assert pooled["support"].tolist() == [3, 2, 1]


def test_confusion_figure_is_readable_and_written(tmp_path) -> None:
    rng = np.random.default_rng(0)
    classes = [f"grade {i} lesion" for i in range(8)]
    mats = {m: rng.integers(0, 400, (8, 8)) for m in ("full", "lora", "linear", "vpt")}
    fig = draw_confusion(mats, classes, title="ChestDR · vit_t: confusion summed over seeds")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.findobj(Text)
             if t.get_text() and t.get_visible()]  # fmt: skip
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    files = write_confusion(mats, classes, tmp_path, "confusion-x")
    assert [f.name for f in files] == ["confusion-x.png", "confusion-x.pdf"]


def test_delong_hand_example_and_sklearn_aucs() -> None:
    # positives a: 3, 1; negatives 2, 0 -> AUC 3/4; V10 = (1, 1/2), V01 = (1/2, 1):
    # var = 0.125/2 + 0.125/2 = 0.125. b ranks perfectly (AUC 1, no variance, no covariance).
    y = np.array([1, 1, 0, 0])
    auc_a, auc_b, p = delong_test(y, np.array([3, 1, 2, 0.0]), np.array([2, 3, 1, 0.0]))
    assert (auc_a, auc_b) == (0.75, 1.0)
    assert p == pytest.approx(2 * (1 - 0.7602499), abs=1e-6)  # z = 0.25 / sqrt(0.125)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    a = np.round(y + rng.normal(size=400), 1)  # rounded: ties, handled by midranks
    b = 0.5 * y + rng.normal(size=400)
    aucs, cov = delong_aucs(y, np.vstack([a, b]))
    assert aucs == pytest.approx([roc_auc_score(y, a), roc_auc_score(y, b)])
    assert cov.shape == (2, 2) and cov[0, 1] == pytest.approx(cov[1, 0])
    assert math.isnan(delong_test(y, a, a)[2])  # the same scores: nothing to test


# --------------------------------------------------------------------------- bootstrap


def run(n: int, seed: int = 0, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    lg = rng.normal(size=(n, c))
    lg[np.arange(n), y] += 1.0
    return lg, y


def test_stratified_resample_keeps_every_class_count() -> None:
    y = np.array([0] * 40 + [1] * 5 + [2] * 15)
    idx = resample_indices(y, 50, np.random.default_rng(0), stratified=True)
    assert idx.shape == (50, 60)
    for rep in idx:
        assert np.bincount(y[rep], minlength=3).tolist() == [40, 5, 15]


@pytest.mark.parametrize(
    ("task", "metric", "n_classes"),
    [("multiclass", "accuracy", 4), ("binary", "auc", 2), ("multiclass", "auc", 4),
     ("multilabel", "auc", 3), ("multiclass", "macro_f1", 4)],
)  # fmt: skip
def test_resampled_metric_equals_compute_metrics_on_each_resample(
    task: str, metric: str, n_classes: int
) -> None:
    """The weighted fast paths (accuracy, AUC with ties) give compute_metrics' value on every
    resampled test set, exactly; other metrics go through compute_metrics itself."""
    rng = np.random.default_rng(3)
    if task == "multilabel":
        y = (rng.random((90, n_classes)) < 0.4).astype(int)
        lg = np.round(rng.normal(size=y.shape) + y, 1)
    else:
        y = np.arange(90) % n_classes
        lg = rng.normal(size=(90, n_classes))
        lg[np.arange(90), y] += 1.0
        lg = np.round(lg, 1)  # ties in the scores: AUC counts them a half
    idx = resample_indices(y, 6, rng, stratified=task != "multilabel")
    fast = resampled_metric(lg, y, task, metric, idx)
    slow = [compute_metrics(lg[i], y[i], task)[metric] for i in idx]
    assert fast == pytest.approx(slow, abs=1e-12)


def test_test_set_interval_covers_reproducible_and_narrows() -> None:
    small = image_interval([run(60)], "multiclass", "accuracy", n_boot=400, seed=7)
    assert small.lo <= small.point <= small.hi and small.note == ""
    assert small.point == pytest.approx(100 * compute_metrics(*run(60), "multiclass")["accuracy"])
    assert image_interval([run(60)], "multiclass", "accuracy", n_boot=400, seed=7) == small
    big = image_interval([run(2400)], "multiclass", "accuracy", n_boot=400, seed=7)
    assert big.hi - big.lo < (small.hi - small.lo) / 3  # about 1 / sqrt(40)
    assert "within each class" in small.over
    tiny = image_interval([run(12)], "multiclass", "accuracy")
    assert math.isnan(tiny.lo) and tiny.note == "12 test images; a bootstrap needs 30"
    seeds = image_interval([run(60, 0), run(60, 1)], "multiclass", "macro_f1", n_boot=50)
    assert "mean of 2 seeds, the same images for every seed" in seeds.over
    assert seeds.lo <= seeds.point <= seeds.hi


# --------------------------------------------------------------------------- entry point


def frame_with_predictions() -> tuple[pd.DataFrame, dict[str, Any]]:
    rows, store = [], {}
    for b in range(2):
        for m, gain in (("full", 1.5), ("lora", 1.2), ("linear", 0.2)):
            for s in range(3):
                lg, y = run(60, seed=10 * b + s)
                lg[np.arange(60), y] += gain
                path = f"/preds/{b}-{m}-{s}.npz"
                store[path] = {"test": SimpleNamespace(logits=lg, labels=y)}
                rows.append({"run_id": path, "status": "ok", "dataset": f"D{b}", "method": m,
                             "seed": s, "shots": None, "split_seed": 0, "backbone": "vit_t",
                             "setting": f"{b}{m}", "primary_metric": "accuracy",
                             "primary": compute_metrics(lg, y, "multiclass")["accuracy"],
                             "demo": False, "predictions_file": path, "task": "multiclass",
                             "classes": ["benign", "malignant", "normal"]})  # fmt: skip
    return pd.DataFrame(rows), store


def test_statistics_report_with_predictions(tmp_path) -> None:
    df, store = frame_with_predictions()
    out = statistics_report(df, "linear", tmp_path, load=lambda path, _sha: store[path], n_boot=100)
    by = {s["heading"]: s for s in out.sections}
    boot = by["Test-set bootstrap intervals"]["tables"][0][1]
    assert len(boot) == 6 and list(boot.columns)[:3] == ["block", "method", "seeds"]
    per_class = by["Per-class results"]
    # per block: recall, F1 and AUC, a row per class and a column per method, best marked
    assert len(per_class["tables"]) == 2 * 3 and len(per_class["figures"]) == 2
    caption, recall, ranks = per_class["tables"][0]
    assert caption.startswith("D0 · vit_t: recall (sensitivity) per class")
    assert list(recall.columns) == ["class", "full", "lora", "linear", "support"]
    assert recall["class"].tolist() == ["benign", "malignant", "normal"]
    best = [recall.columns[list(r).index(1)] for r in ranks.to_numpy()]
    assert all(float(recall.at[i, m]) == max(float(recall.at[i, c]) for c in ("full", "lora",
               "linear")) for i, m in enumerate(best))  # fmt: skip
    delong = by["DeLong tests of ROC AUC"]["tables"]
    assert [c for c, _ in delong] == ["D0 · vit_t: against linear", "D1 · vit_t: against linear"]
    assert set(delong[0][1]["seeds"]) == {3} and len(delong[0][1]) == 6  # 2 methods x 3 classes
    csv = pd.read_csv(tmp_path / "per_class.csv")
    assert len(csv) == 2 * 3 * 3 and (tmp_path / "per_class.csv") in out.files
    assert "figures/confusion-d0-vit-t.png" in out.markdown
