"""bench.uncertainty: closed-form standard errors checked against values worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.uncertainty import (
    ASSUMED_SCORE,
    WIDE,
    MetricUncertainty,
    ap_se,
    binomial_se,
    class_counts,
    hanley_mcneil_se,
    metric_uncertainty,
)

ROOT = Path(__file__).resolve().parents[1]


def test_binomial_se_by_hand():
    # sqrt(0.9 * 0.1 / 100) = sqrt(0.0009) = 0.03
    assert binomial_se(0.9, 100) == pytest.approx(0.03)
    # sqrt(0.5 * 0.5 / 25) = 0.5 / 5 = 0.1
    assert binomial_se(0.5, 25) == pytest.approx(0.1)
    assert math.isnan(binomial_se(0.9, 0))


def test_hanley_mcneil_by_hand():
    # A = 0.9, n_pos = 21, n_neg = 57 (78 validation images, 21 positives):
    # Q1 = 0.9 / 1.1 = 0.818182;  Q2 = 2 * 0.81 / 1.9 = 0.852632;  A^2 = 0.81
    # A(1-A) = 0.09;  20 * (Q1 - A^2) = 0.163636;  56 * (Q2 - A^2) = 2.387368;  sum = 2.641005
    # var = 2.641005 / (21 * 57 = 1197) = 0.00220635;  SE = 0.046972
    assert hanley_mcneil_se(0.9, 21, 57) == pytest.approx(0.0470, abs=1e-4)
    assert math.isnan(hanley_mcneil_se(0.9, 0, 57))
    assert math.isnan(hanley_mcneil_se(0.9, 21, 0))


def test_binary_auc_example_78_images_21_positives():
    # The same split as above through metric_uncertainty: counts = [57 negatives, 21 positives].
    u = metric_uncertainty("auc", "binary", [57, 21], 78, 0.9)
    assert u is not None
    assert u.se == pytest.approx(0.0470, abs=1e-4)
    assert u.per_class is None
    assert u.method == "Hanley-McNeil"
    # half-width 1.96 * 0.046972 = 0.092065: far wider than five points
    assert u.half_width == pytest.approx(0.0921, abs=1e-4)
    assert u.wide


def test_ap_se_by_hand():
    # sqrt(0.64 * 0.36 / 16) = 0.48 / 4 = 0.12
    assert ap_se(0.64, 16) == pytest.approx(0.12)
    assert math.isnan(ap_se(0.64, 0))


def test_multiclass_auc_macro_by_hand():
    # 3 classes, counts 10/20/30 of n = 60, A = 0.8: Q1 = 0.666667, Q2 = 0.711111, A^2 = 0.64
    # class 0 (10 vs 50): (0.16 + 9*0.026667 + 49*0.071111) / 500 = 3.884444 / 500 = 0.00776889
    # class 1 (20 vs 40): (0.16 + 19*0.026667 + 39*0.071111) / 800 = 3.440000 / 800 = 0.00430000
    # class 2 (30 vs 30): (0.16 + 29*0.026667 + 29*0.071111) / 900 = 2.995556 / 900 = 0.00332840
    # SEs 0.088141, 0.065574, 0.057692; macro sqrt(0.01539728) / 3 = 0.124086 / 3 = 0.041362
    u = metric_uncertainty("auc", "multiclass", [10, 20, 30], 60, 0.8)
    assert u is not None
    assert u.per_class == pytest.approx((0.0881, 0.0656, 0.0577), abs=1e-4)
    assert u.se == pytest.approx(0.0414, abs=1e-4)
    assert u.method == "Hanley-McNeil, macro over 3 classes"
    # Ordinal uses the same one-vs-rest macro AUC.
    assert metric_uncertainty("auc", "ordinal", [10, 20, 30], 60, 0.8) == MetricUncertainty(
        "auc", 0.8, 60, u.se, u.per_class, u.method
    )


def test_multilabel_auc_per_label_by_hand():
    # n = 40, label 0 has 5 positives (35 negatives), label 1 has 10 (30), A = 0.75:
    # Q1 = 0.6, Q2 = 2 * 0.5625 / 1.75 = 0.642857, A^2 = 0.5625, A(1-A) = 0.1875
    # label 0: (0.1875 + 4*0.0375 + 34*0.080357) / 175 = 3.069643 / 175 = 0.01754082 -> 0.132442
    # label 1: (0.1875 + 9*0.0375 + 29*0.080357) / 300 = 2.855357 / 300 = 0.00951786 -> 0.097560
    # macro sqrt(0.02705867) / 2 = 0.164495 / 2 = 0.082248
    u = metric_uncertainty("auc", "multilabel", [5, 10], 40, 0.75)
    assert u is not None
    assert len(u.per_class) == 2
    assert u.per_class == pytest.approx((0.1324, 0.0976), abs=1e-4)
    assert u.se == pytest.approx(0.0822, abs=1e-4)
    assert u.method == "Hanley-McNeil, macro over 2 labels"


def test_map_via_ap_se_skips_labels_without_positives():
    # labels with 16, 4 and 0 positives, AP = 0.64: 0.48/4 = 0.12, 0.48/2 = 0.24, nan;
    # macro over the 2 valid labels: sqrt(0.0144 + 0.0576) / 2 = sqrt(0.072) / 2 = 0.134164
    u = metric_uncertainty("map", "multilabel", [16, 4, 0], 50, 0.64)
    assert u is not None
    assert len(u.per_class) == 3
    assert u.per_class[:2] == pytest.approx((0.12, 0.24))
    assert math.isnan(u.per_class[2])
    assert u.se == pytest.approx(0.134164, abs=1e-6)
    assert u.method == "binomial over positives, macro over 2 labels"


def test_no_valid_class_gives_nan():
    u = metric_uncertainty("map", "multilabel", [0, 0], 10, 0.5)
    assert u is not None
    assert math.isnan(u.se)
    assert not u.wide
    assert math.isnan(metric_uncertainty("auc", "binary", [10, 0], 10, 0.9).se)


def test_accuracy_and_balanced_accuracy_by_hand():
    # accuracy: sqrt(0.9 * 0.1 / 100) = 0.03
    u = metric_uncertainty("accuracy", "multiclass", [50, 50], 100, 0.9)
    assert u == MetricUncertainty("accuracy", 0.9, 100, pytest.approx(0.03), None, "binomial")
    # balanced accuracy 0.8 over classes of 25 and 100: sqrt(0.16/25) = 0.08, sqrt(0.16/100) =
    # 0.04; macro sqrt(0.0064 + 0.0016) / 2 = sqrt(0.008) / 2 = 0.044721
    b = metric_uncertainty("balanced_accuracy", "binary", [25, 100], 125, 0.8)
    assert b.per_class == pytest.approx((0.08, 0.04))
    assert b.se == pytest.approx(0.044721, abs=1e-6)


def test_wide_and_resolvable():
    # se 0.025 -> half-width 0.049 (not wide); se 0.026 -> 0.05096 (wide)
    narrow = MetricUncertainty("accuracy", 0.9, 144, 0.025, None, "binomial")
    assert narrow.half_width == pytest.approx(0.049)
    assert not narrow.wide
    assert MetricUncertainty("accuracy", 0.9, 133, 0.026, None, "binomial").wide
    assert WIDE == 0.05
    # resolvable = 1.96 * sqrt(2) * 0.025 = 0.049 * 1.414214 = 0.069296
    assert narrow.resolvable == pytest.approx(0.069296, abs=1e-6)
    assert narrow.resolvable == pytest.approx(narrow.half_width * math.sqrt(2))


def test_unsupported_metric_is_none():
    assert metric_uncertainty("f1", "multiclass", [5, 5], 10, 0.8) is None
    assert metric_uncertainty("qwk", "ordinal", [5, 5, 5], 15, 0.8) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="fraction"):
        metric_uncertainty("accuracy", "multiclass", [50, 50], 100, 85.0)
    with pytest.raises(ValueError, match="task"):
        metric_uncertainty("accuracy", "regression", [50, 50], 100, 0.85)
    with pytest.raises(ValueError, match="task"):
        class_counts([0, 1], "regression", 2)


def test_class_counts_each_task():
    assert class_counts(np.array([0, 2, 2, 1, 2]), "multiclass", 4) == [1, 1, 3, 0]
    assert class_counts([1, 0, 1, 1], "binary", 2) == [1, 3]
    assert class_counts((0, 0, 4), "ordinal", 5) == [2, 0, 0, 0, 1]
    ml = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 1]])
    assert class_counts(ml, "multilabel", 3) == [3, 0, 3]
    assert class_counts(ml.tolist(), "multilabel", 3) == [3, 0, 3]


def test_assumed_score_is_a_fraction():
    assert 0.0 < ASSUMED_SCORE < 1.0


def test_import_does_not_load_torch():
    code = "import bench.uncertainty, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
