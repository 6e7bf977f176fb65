"""The k-NN baseline: DINO's weighted vote computed exactly, multi-label by label, nothing
trained, the same answer every time, and a whole cell run from the frozen-feature cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import methods
from bench.cli import app
from methods.frozen_head import FEATURE
from tests.conftest import grid_args, tiny_vit


def _knn(**hparams) -> torch.nn.Module:
    spec = methods.get_method("knn")
    return spec.build(tiny_vit(3), **{**spec.hparams, **hparams})


def _features(*rows: list[float]) -> dict[str, torch.Tensor]:
    """Rows padded with zeros to the tiny ViT's 32 feature dimensions."""
    x = torch.zeros(len(rows), 32)
    for i, row in enumerate(rows):
        x[i, : len(row)] = torch.tensor(row)
    return {FEATURE: x}


def test_the_vote_by_hand() -> None:
    model = _knn(k=2, temperature=0.1)
    # memory: e1 (class 0), e2 (class 1), (e1 + e2) (class 1; unit length once normalised)
    model.remember(_features([1, 0], [0, 1], [1, 1]), torch.tensor([0, 1, 1]), multilabel=False)
    # query 2·e1: cosine 1, 0 and 1/sqrt(2); the two nearest are e1 (class 0) and e1+e2 (class 1),
    # weighted softmax([1, 0.70711] / 0.1) = e^10 / (e^10 + e^7.0711) = 1 / (1 + e^-2.9289)
    # = 1 / 1.053453 = 0.949258 for class 0 and 0.050742 for class 1; class 2 gets no vote
    votes = model.votes(_features([2, 0])[FEATURE])
    assert votes[0].tolist() == pytest.approx([0.949258, 0.050742, 0.0], abs=1e-6)
    logits = model.forward_with(None, _features([2, 0]))
    assert logits.softmax(1)[0].tolist() == pytest.approx([0.949258, 0.050742, 0.0], abs=1e-6)
    assert torch.isfinite(logits).all()  # the class nobody voted for stays finite


def test_multilabel_votes_each_label_apart() -> None:
    model = _knn(k=2, temperature=1.0)
    labels = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 0]])
    model.remember(_features([1, 0], [0, 1], [-1, 0]), labels, multilabel=True)
    # query e1 + e2: cosines 0.70711, 0.70711, -0.70711; the two nearest weigh 1/2 each
    votes = model.votes(_features([1, 1])[FEATURE])
    assert votes[0].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-6)
    probs = torch.sigmoid(model.forward_with(None, _features([1, 1])))
    assert probs[0].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-6)


def test_k_larger_than_the_memory_votes_with_all_of_it() -> None:
    model = _knn(k=20, temperature=0.07)
    model.remember(_features([1, 0], [0, 1]), torch.tensor([0, 2]), multilabel=False)
    votes = model.votes(_features([1, 0.1])[FEATURE])
    assert votes.sum().item() == pytest.approx(1.0) and votes[0, 1] == 0 and votes[0, 0] > 0.5


def test_nothing_trains_and_the_answer_does_not_change() -> None:
    model = _knn()
    assert not any(p.requires_grad for p in model.parameters())
    torch.manual_seed(1)
    feats, labels = torch.randn(40, 32), torch.randint(0, 3, (40,))
    model.remember({FEATURE: feats}, labels, multilabel=False)
    query = {FEATURE: torch.randn(8, 32)}
    first = model.forward_with(None, query)
    assert torch.equal(first, model.forward_with(None, query))
    # the memory's order is no part of the answer
    order = torch.randperm(40)
    model.remember({FEATURE: feats[order]}, labels[order], multilabel=False)
    assert torch.allclose(first, model.forward_with(None, query), atol=1e-6)


@pytest.mark.parametrize(("hparams", "match"), [({"k": 0}, "k must be an integer >= 1, got 0"),
                                                ({"temperature": 0.0}, "temperature must be a number > 0")])  # fmt: skip
def test_bad_values_are_refused(hparams, match) -> None:
    with pytest.raises(ValueError, match=match):
        _knn(**hparams)


def test_a_knn_cell_runs_from_the_feature_cache(tiny_data_root, tmp_path) -> None:
    results = tmp_path / "r"
    args = grid_args(tiny_data_root, results, "--methods", "knn,linear", "--epochs", "1")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    records = {}
    for path in results.glob("*.json"):
        record = json.loads(path.read_text())
        records[record["config"]["method"]] = record
    knn = records["knn"]
    assert knn["status"] == "ok"
    assert knn["params"]["trainable_params"] == 0
    assert knn["feature_cache"]["used"] is True  # whatever --augment says: nothing trains
    assert knn["training"]["augment_applied"] == "none"
    assert knn["training"]["best_epoch"] == 0 and len(knn["training"]["history"]) == 1
    assert knn["training"]["selection"]["epoch"] == 0
    assert 0.0 <= knn["metrics"]["primary"] <= 1.0 and not math.isnan(knn["metrics"]["primary"])
    assert knn["cost"]["train_step"]["images_total"] == 48  # one pass over the training split
