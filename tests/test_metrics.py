"""Tests for bench.metrics against values worked out by hand on tiny inputs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from bench.metric_table import HIGHER_IS_BETTER
from bench.metrics import (
    PRIMARY_METRIC_DEFAULTS,
    TASKS,
    classification_metrics,
    compute_metrics,
    multilabel_metrics,
)

# Probabilities in these fixtures avoid multiples of 1/15 so that no confidence sits on an ECE
# bin edge (bins are [k/15, (k+1)/15), bin index = floor(15 * conf)).


def binary_logits(p1: list[float]) -> np.ndarray:
    """Two-logit rows [0, log(p/(1-p))] whose softmax is exactly [1-p, p]."""
    p = np.asarray(p1, dtype=np.float64)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


# --------------------------------------------------------------------------- binary

# sample:   s0    s1   s2   s3    s4   s5
# target:   0     1    1    1     1    1
# p(cls 1): 0.45  0.9  0.7  0.35  0.1  0.95
# pred:     0     1    1    0     0    1
BIN_P1 = [0.45, 0.9, 0.7, 0.35, 0.1, 0.95]
BIN_T = [0, 1, 1, 1, 1, 1]


def test_binary_hand_computed() -> None:
    m = classification_metrics(binary_logits(BIN_P1), BIN_T, task="binary")

    # correct: s0, s1, s2, s5 -> 4/6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recall class 0 = 1/1, recall class 1 = 3/5 (s1, s2, s5) -> (1 + 0.6) / 2 = 0.8
    assert m["balanced_accuracy"] == pytest.approx(0.8)
    # class 1: TP=3, FP=0, FN=2 -> F1 = 2*3 / (2*3 + 0 + 2) = 0.75
    # class 0: TP=1, FP=2 (s3, s4), FN=0 -> F1 = 2 / (2 + 2) = 0.5
    # macro = (0.75 + 0.5) / 2 = 0.625
    assert m["macro_f1"] == pytest.approx(0.625)
    # AUC pair counting: 1 negative (0.45) x 5 positives {0.9, 0.7, 0.35, 0.1, 0.95};
    # positive ranked above the negative in 3 pairs (0.9, 0.7, 0.95) -> 3/5
    assert m["auc"] == pytest.approx(0.6)
    # ECE on max prob: conf / correct / bin=floor(15*conf)
    #   s0 0.55 ok  b8 | s1 0.90 ok b13 | s2 0.70 ok b10
    #   s3 0.65 bad b9 | s4 0.90 bad b13 | s5 0.95 ok b14
    # b8 |1-0.55|=0.45, b9 |0-0.65|=0.65, b10 |1-0.7|=0.30, b14 |1-0.95|=0.05 (weight 1/6 each)
    # b13 acc 1/2, conf 0.9 -> 0.40 (weight 2/6)
    # ECE = (0.45 + 0.65 + 0.30 + 0.05 + 2*0.40) / 6 = 2.25 / 6 = 0.375
    # (unbinned mean |correct - conf| would be 2.45/6 = 0.4083, so binning is exercised)
    assert m["ece"] == pytest.approx(0.375, abs=1e-6)
    # NLL = -mean log p(true): p(true) = 0.55, 0.9, 0.7, 0.35, 0.1, 0.95
    # = (0.597837 + 0.105361 + 0.356675 + 1.049822 + 2.302585 + 0.051293) / 6 = 0.743929
    assert m["nll"] == pytest.approx(0.743929, abs=1e-6)
    assert m["nll"] == pytest.approx(
        -sum(math.log(p) for p in [0.55, 0.9, 0.7, 0.35, 0.1, 0.95]) / 6
    )

    assert set(m) == {"accuracy", "balanced_accuracy", "macro_f1", "auc", "ece", "nll"}
    assert all(type(v) is float for v in m.values())


def test_binary_dispatch_and_torch_inputs_match_numpy() -> None:
    lg = binary_logits(BIN_P1)
    ref = compute_metrics(lg, BIN_T, "binary")
    # float32 tensor that requires grad + int tensor targets must be accepted.
    t_logits = torch.tensor(lg, dtype=torch.float32, requires_grad=True)
    got = compute_metrics(t_logits, torch.tensor(BIN_T), "binary")
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-5), k
    assert got["auc"] == pytest.approx(0.6)


def test_nll_is_stable_for_huge_logits() -> None:
    # Sample 0: logits [0, 1000], target 0 -> log-softmax of class 0 = -1000 exactly
    #   (naive log(softmax) would be log(0) = -inf).
    # Sample 1: logits [1000, 0], target 0 -> -log(1) = 0.
    # mean NLL = (1000 + 0) / 2 = 500
    m = classification_metrics(np.array([[0.0, 1000.0], [1000.0, 0.0]]), [0, 0])
    assert m["nll"] == pytest.approx(500.0)
    # Shifting every logit by a constant must not change anything.
    shifted = classification_metrics(binary_logits(BIN_P1) + 300.0, BIN_T, task="binary")
    assert shifted["nll"] == pytest.approx(0.743929, abs=1e-6)


def test_binary_auc_uses_probability_of_class_one() -> None:
    # Perfect ranking of class 1: negatives p1 = {0.2, 0.3}, positives p1 = {0.7, 0.8}
    # -> all 4 pairs ordered -> AUC 1.0 (using p(class 0) instead would give 0.0).
    m = classification_metrics(binary_logits([0.2, 0.7, 0.3, 0.8]), [0, 1, 0, 1], task="binary")
    assert m["auc"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- multiclass

# rows are probabilities; logits = log(prob) so softmax returns them exactly.
#        p0    p1    p2     target  pred  conf
MC_P = [
    [0.70, 0.20, 0.10],  # 0  0  0.70 ok
    [0.10, 0.50, 0.40],  # 1  1  0.50 ok
    [0.20, 0.25, 0.55],  # 2  2  0.55 ok
    [0.30, 0.55, 0.15],  # 2  1  0.55 wrong
    [0.50, 0.30, 0.20],  # 1  0  0.50 wrong
    [0.10, 0.15, 0.75],  # 2  2  0.75 ok
]
MC_T = [0, 1, 2, 2, 1, 2]


def test_multiclass_hand_computed() -> None:
    m = compute_metrics(np.log(np.array(MC_P)), MC_T, "multiclass")

    # correct: s0, s1, s2, s5 -> 4/6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls: c0 1/1, c1 1/2 (s1 ok, s4 wrong), c2 2/3 (s2, s5 ok; s3 wrong)
    # -> (1 + 1/2 + 2/3) / 3 = 13/18 = 0.72222
    assert m["balanced_accuracy"] == pytest.approx(13 / 18)
    # F1 c0: TP1 FP1(s4) FN0 -> 2/3 ; c1: TP1 FP1(s3) FN1(s4) -> 2/4 ; c2: TP2 FP0 FN1 -> 4/5
    # macro = (2/3 + 1/2 + 4/5) / 3 = 59/90 = 0.65556
    assert m["macro_f1"] == pytest.approx(59 / 90)
    # One-vs-rest AUC, pair counting on p_k:
    #  c0: pos {0.70}; neg {0.10, 0.20, 0.30, 0.50, 0.10}: 5/5 -> 1
    #  c1: pos {0.50, 0.30}; neg {0.20, 0.25, 0.55, 0.15}: 0.50 beats 3, 0.30 beats 3 -> 6/8
    #  c2: pos {0.55, 0.15, 0.75}; neg {0.10, 0.40, 0.20}: 3 + 1 + 3 = 7/9
    #  macro = (1 + 3/4 + 7/9) / 3 = 91/108 = 0.84259
    assert m["auc"] == pytest.approx(91 / 108)
    # ECE bins (floor(15*conf)):
    #  b7  = {s1 ok 0.50, s4 wrong 0.50}: acc 0.5, conf 0.5 -> gap 0
    #  b8  = {s2 ok 0.55, s3 wrong 0.55}: acc 0.5, conf 0.55 -> gap 0.05, weight 2/6
    #  b10 = {s0 ok 0.70}: gap 0.30 ; b11 = {s5 ok 0.75}: gap 0.25
    #  ECE = (0 + 2*0.05 + 0.30 + 0.25) / 6 = 0.65/6 = 0.108333
    assert m["ece"] == pytest.approx(0.65 / 6, abs=1e-6)
    # NLL: p(true) = 0.70, 0.50, 0.55, 0.15, 0.30, 0.75
    # = (0.356675 + 0.693147 + 0.597837 + 1.897120 + 1.203973 + 0.287682) / 6 = 0.839406
    assert m["nll"] == pytest.approx(0.839406, abs=1e-6)
    assert "qwk" not in m


def test_absent_class_auc_is_nan_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    # 3 classes but class 2 never appears in targets -> one-vs-rest AUC undefined for class 2.
    logits = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2], [0.5, 0.2, 0.3]]))
    with caplog.at_level(logging.WARNING, logger="bench.metrics"):
        m = compute_metrics(logits, [0, 1, 1, 0], "multiclass")
    assert math.isnan(m["auc"])
    assert any("auc" in r.getMessage() and "[2]" in r.getMessage() for r in caplog.records)
    # the rest is still computed: all 4 predictions correct
    assert m["accuracy"] == pytest.approx(1.0)
    assert math.isfinite(m["ece"]) and math.isfinite(m["nll"])


def test_binary_single_class_targets_auc_nan(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bench.metrics"):
        m = compute_metrics(binary_logits([0.9, 0.8, 0.3]), [1, 1, 1], "binary")
    assert math.isnan(m["auc"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert caplog.records


# --------------------------------------------------------------------------- ordinal


def test_ordinal_qwk_hand_computed() -> None:
    # targets [0, 1, 2, 2], predictions [0, 2, 2, 1] (C = 3), weights w_ij = (i - j)^2
    # Observed O: (0,0), (1,2), (2,2), (2,1) -> sum w*O = 0 + 1 + 0 + 1 = 2
    # Histograms: true t = [1, 1, 2], pred p = [1, 1, 2]; E_ij = t_i p_j / 4
    # sum w*E = (1/4) * [ t0(p1*1 + p2*4) + t1(p0*1 + p2*1) + t2(p0*4 + p1*1) ]
    #         = (1/4) * [ 1*(1 + 8) + 1*(1 + 2) + 2*(4 + 1) ] = 22/4 = 5.5
    # kappa = 1 - 2 / 5.5 = 7/11 = 0.63636
    preds = [0, 2, 2, 1]
    logits = 3.0 * np.eye(3)[preds]
    m = compute_metrics(logits, [0, 1, 2, 2], "ordinal")
    assert m["qwk"] == pytest.approx(7 / 11)
    assert m["accuracy"] == pytest.approx(2 / 4)

    # Same six-sample fixture as the multiclass test: preds [0,1,2,1,0,2], targets [0,1,2,2,1,2]
    # sum w*O = (2,1) + (1,0) = 2 ; t = [1,2,3], p = [2,2,2]
    # sum w*E = (1/6) * [1*(2 + 8) + 2*(2 + 2) + 3*(8 + 2)] = 48/6 = 8 -> kappa = 1 - 2/8 = 0.75
    m2 = compute_metrics(np.log(np.array(MC_P)), MC_T, "ordinal")
    assert m2["qwk"] == pytest.approx(0.75)


# --------------------------------------------------------------------------- multilabel

# Sigmoid probabilities (logits = log(p / (1-p))), 4 samples x 3 labels; label 2 has no
# positives, so it is excluded from mAP / AUC but still counts for accuracy, ECE and NLL.
ML_P = np.array(
    [
        [0.90, 0.65, 0.22],
        [0.41, 0.70, 0.30],
        [0.42, 0.05, 0.15],
        [0.62, 0.10, 0.85],
    ]
)
ML_T = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_multilabel_hand_computed() -> None:
    m = multilabel_metrics(logit(ML_P), ML_T)

    # AP label 0: ranking s0 .90(+) s3 .62(-) s2 .42(+) s1 .41(-)
    #   = 0.5 * P@1 + 0.5 * P@3 = 0.5 * 1 + 0.5 * 2/3 = 0.83333
    # AP label 1: ranking s1 .70(+) s0 .65(-) s3 .10(-) s2 .05(+)
    #   = 0.5 * 1 + 0.5 * 2/4 = 0.75
    # mAP = (0.83333 + 0.75) / 2 = 0.791667
    assert m["map"] == pytest.approx((5 / 6 + 0.75) / 2)
    # AUC label 0: pos {0.90, 0.42} neg {0.41, 0.62}: 2 + 1 = 3/4
    # AUC label 1: pos {0.70, 0.05} neg {0.65, 0.10}: 2 + 0 = 2/4
    # macro = 0.625
    assert m["auc"] == pytest.approx(0.625)
    # preds (p > 0.5): label0 [1,0,0,1] vs [1,0,1,0] -> 2/4; label1 [1,1,0,0] vs [0,1,1,0] -> 2/4;
    # label2 [0,0,0,1] vs [0,0,0,0] -> 3/4 ; mean = 7/12
    assert m["label_accuracy"] == pytest.approx(7 / 12)
    # Binary ECE per label (confidence = p, "accuracy" = target), bin = floor(15 p):
    #  label0: b13 {0.90,t1} gap .10 ; b6 {0.41,t0; 0.42,t1} acc .5 conf .415 gap .085 (w 2/4) ;
    #          b9 {0.62,t0} gap .62 -> (.10 + 2*.085 + .62)/4 = 0.2225
    #  label1: all in separate bins: .65 + .30 + .95 + .10 = 2.0 -> /4 = 0.5
    #  label2: all targets 0, separate bins: .22 + .30 + .15 + .85 = 1.52 -> /4 = 0.38
    #  mean = (0.2225 + 0.5 + 0.38) / 3 = 0.3675
    assert m["ece"] == pytest.approx(0.3675, abs=1e-6)
    # NLL = mean over 12 entries of -[t log p + (1-t) log(1-p)]
    terms = [
        0.90, 0.59, 0.42, 0.38,  # label 0: t=1 -> p, t=0 -> 1-p
        0.35, 0.70, 0.05, 0.90,  # label 1
        0.78, 0.70, 0.85, 0.15,  # label 2
    ]  # fmt: skip
    assert m["nll"] == pytest.approx(-sum(math.log(x) for x in terms) / 12)
    assert m["nll"] == pytest.approx(0.803370, abs=1e-6)
    assert set(m) == {"map", "auc", "label_accuracy", "ece", "nll"}
    assert compute_metrics(logit(ML_P), ML_T, "multilabel") == m


def test_multilabel_threshold_is_strict() -> None:
    # logit 0 -> sigmoid 0.5 -> NOT > 0.5 -> predicted 0; both targets 0 -> accuracy 1.
    m = multilabel_metrics(np.zeros((2, 1)), np.zeros((2, 1), dtype=int))
    assert m["label_accuracy"] == pytest.approx(1.0)
    # no positives anywhere -> map/auc undefined
    assert math.isnan(m["map"]) and math.isnan(m["auc"])
    # BCE at p = 0.5 is log 2
    assert m["nll"] == pytest.approx(math.log(2))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("logits", "targets", "task", "match"),
    [
        (np.zeros(4), [0, 1, 0, 1], "multiclass", "2-D"),
        (np.zeros((4, 1)), [0, 0, 0, 0], "multiclass", "at least 2"),
        (np.zeros((4, 3)), [0, 1, 0], "multiclass", "disagree on N"),
        (np.zeros((4, 3)), [0, 1, 3, 0], "multiclass", r"\[0, 2\]"),
        (np.zeros((4, 3)), [0, 1, -1, 0], "multiclass", r"\[0, 2\]"),
        (np.zeros((4, 3)), [[0], [1], [2], [0]], "multiclass", "1-D"),
        (np.zeros((4, 3)), [0, 1, 2, 0], "binary", "2 logit columns"),
        (np.zeros((2, 2)), [0.5, 1.0], "binary", "integer"),
        (np.array([[0.0, np.nan], [0.0, 1.0]]), [0, 1], "binary", "NaN"),
        (np.zeros((0, 2)), [], "multiclass", "empty"),
        (np.zeros((4, 3)), np.zeros((4, 2), dtype=int), "multilabel", "same shape"),
        (np.zeros((2, 2)), np.array([[0, 2], [1, 0]]), "multilabel", "multi-hot"),
    ],
)
def test_shape_and_value_errors(logits, targets, task, match) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(logits, targets, task)


def test_unknown_task_lists_valid_tasks() -> None:
    with pytest.raises(ValueError, match="multiclass, binary, multilabel, ordinal"):
        compute_metrics(np.zeros((2, 2)), [0, 1], "regression")


def test_float_targets_with_integer_values_are_accepted() -> None:
    m = compute_metrics(binary_logits([0.2, 0.7]), torch.tensor([0.0, 1.0]), "binary")
    assert m["accuracy"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- tables


def test_primary_metric_defaults_and_direction_table() -> None:
    assert PRIMARY_METRIC_DEFAULTS == {
        "multiclass": "accuracy",
        "binary": "auc",
        "multilabel": "map",
        "ordinal": "qwk",
    }
    assert set(PRIMARY_METRIC_DEFAULTS) == set(TASKS)
    assert HIGHER_IS_BETTER["ece"] is False and HIGHER_IS_BETTER["nll"] is False
    # every key any task produces has a direction
    produced: set[str] = set()
    produced |= set(compute_metrics(binary_logits(BIN_P1), BIN_T, "binary"))
    produced |= set(compute_metrics(np.log(np.array(MC_P)), MC_T, "ordinal"))
    produced |= set(compute_metrics(logit(ML_P), ML_T, "multilabel"))
    assert produced == set(HIGHER_IS_BETTER)
    assert all(HIGHER_IS_BETTER[k] for k in produced - {"ece", "nll"})


def test_reliability_bins_hand_computed() -> None:
    from bench.metrics import reliability_bins

    # softmax of [log 0.9, log 0.1] etc.: top-label confidences 0.9 (right), 0.6 (wrong), 0.95
    # (right); with 10 bins: 0.9 and 0.95 share bin 9, 0.6 sits in bin 6
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.95, 0.05]])
    out = reliability_bins(np.log(probs), np.array([0, 0, 0]), "binary", n_bins=10)
    assert out["count"] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 2]
    assert out["confidence"][9] == pytest.approx(0.925) and out["accuracy"][9] == 1.0
    assert out["confidence"][6] == pytest.approx(0.6) and out["accuracy"][6] == 0.0
    assert out["accuracy"][0] is None
    # the count-weighted gap is the same binning's ECE: (2 * 0.075 + 0.6) / 3
    rows = zip(out["count"], out["accuracy"], out["confidence"], strict=True)
    gaps = [c * abs(a - f) for c, a, f in rows if c]
    assert sum(gaps) / 3 == pytest.approx(0.25)
    # multi-label: every entry; a sigmoid of exactly 1.0 lands in the last bin
    ml = reliability_bins(np.array([[50.0, -50.0]]), np.array([[1, 0]]), "multilabel", n_bins=4)
    assert ml["count"] == [1, 0, 0, 1] and ml["accuracy"][3] == 1.0 and ml["accuracy"][0] == 0.0
