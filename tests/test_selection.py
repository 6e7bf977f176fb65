"""The epoch a cell tests is the one its declared rule picks on the validation curve, and the
weights tested are that epoch's: `best` the best score, `last` the final epoch, `smooth` the best
trailing 3-epoch mean; a rule other than best joins the run id, best keeps the old one."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench import train
from bench.config import CellConfig
from bench.selection import epoch_key, selected_epoch, selection_record
from bench.transforms import Preprocess

CURVE = [0.60, 0.91, 0.70, 0.84, 0.86, 0.85]  # one lucky epoch (1), then a steady plateau


def test_best_takes_the_best_epoch_the_earliest_among_ties() -> None:
    assert selected_epoch("best", CURVE) == 1
    assert selected_epoch("best", [0.5, 0.8, 0.8, 0.7]) == 1


def test_last_takes_the_final_epoch_whatever_validation_says() -> None:
    assert selected_epoch("last", CURVE) == 5
    assert selected_epoch("last", [0.9, math.nan]) == 1


def test_smooth_takes_the_best_trailing_three_epoch_mean() -> None:
    # trailing means: .60, .755, .7367, .8167, .80, .85 -> epoch 5 (the lucky epoch alone: .755)
    assert [round(epoch_key("smooth", CURVE[: i + 1]), 4) for i in range(6)] == [
        0.6, 0.755, 0.7367, 0.8167, 0.8, 0.85
    ]  # fmt: skip
    assert selected_epoch("smooth", CURVE) == 5


def test_an_undefined_score_never_wins() -> None:
    assert selected_epoch("best", [math.nan, 0.1]) == 1
    assert selected_epoch("best", [0.1, math.nan]) == 0
    assert selected_epoch("smooth", [0.2, math.nan, 0.9, 0.9, 0.9]) == 4
    assert selected_epoch("best", []) == -1


def test_the_record_keeps_the_curve_the_epoch_and_its_score() -> None:
    history = [{"epoch": i, "val": {"auc": v, "accuracy": 0.5}} for i, v in enumerate(CURVE)]
    best = selection_record("best", "auc", history, 1)
    assert best == {"rule": "best", "metric": "auc", "epoch": 1, "val": 0.91, "curve": CURVE}
    smooth = selection_record("smooth", "auc", history, 5)
    assert smooth["smoothed"] == pytest.approx([0.6, 0.755, 0.73667, 0.81667, 0.8, 0.85], abs=1e-5)


def _fit(select: str, curve: list[float]) -> tuple[train.FitResult, list[dict], dict]:
    """fit a tiny ViT for len(curve) epochs with the validation scores scripted; the trainable
    tensors after each epoch, and after fit returned."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=1, num_heads=2,
                              num_classes=3)  # fmt: skip
    images = torch.randint(0, 255, (32, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 3, (32,))
    settings = train.TrainSettings(
        epochs=len(curve), batch_size=16, optimizer="adamw", lr=1e-2, weight_decay=0.0,
        warmup_epochs=0.0, grad_clip=1.0, seed=0, device=torch.device("cpu"), precision="fp32",
        preprocess=Preprocess(img_size=16, augment="none"), select=select,
    )  # fmt: skip
    scores = iter(curve)
    snapshots: list[dict] = []

    def score(logits, y):
        value = next(scores)
        return value, {"auc": value}

    def on_epoch(_entry):
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    result = train.fit(model, (images, labels), (images[:8], labels[:8]), settings, score=score,
                       on_epoch=on_epoch)  # fmt: skip
    return result, snapshots, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("select", "epoch"), [("best", 1), ("last", 5), ("smooth", 5)])
def test_fit_tests_the_chosen_epochs_weights(select: str, epoch: int) -> None:
    result, snapshots, final = _fit(select, CURVE)
    assert result.best_epoch == epoch
    assert result.best_value == CURVE[epoch]
    for name, tensor in final.items():
        assert torch.equal(tensor, snapshots[epoch][name]), name
    if epoch != len(CURVE) - 1:  # the weights really moved after the chosen epoch
        assert any(not torch.equal(final[n], snapshots[-1][n]) for n in final)


def _cell(**changes) -> CellConfig:
    base = CellConfig(
        method="lora", dataset="demo", seed=0, backbone="demo-vit", pretrained=True,
        weights=None, weights_sha256=None, epochs=5, batch_size=32, img_size=64, device="cpu",
        precision="fp32", optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=1.0,
        grad_clip=1.0,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def test_only_a_rule_other_than_best_changes_the_run_id() -> None:
    assert _cell(select="best").run_id == _cell().run_id
    assert _cell(select="last").run_id != _cell().run_id != _cell(select="smooth").run_id
    # a record written before the rule existed has no `select`: it reads as best
    old = {k: v for k, v in _cell().to_dict().items() if k != "select"}
    assert CellConfig(**old).run_id == _cell().run_id


def test_select_last_runs_end_to_end_and_keeps_the_final_epoch(tiny_data_root, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from bench.cli import app
    from tests.conftest import grid_args

    results = tmp_path / "r"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "3")
    res = CliRunner().invoke(app, [*args, "--select", "last"])
    assert res.exit_code == 0, res.output
    (path,) = results.glob("*.json")
    record = json.loads(path.read_text())
    assert record["config"]["select"] == "last"
    selection = record["training"]["selection"]
    assert selection["rule"] == "last" and selection["epoch"] == 2
    assert record["training"]["best_epoch"] == 2 and len(selection["curve"]) == 3
    assert selection["val"] == record["metrics"]["val"]["auc"] == selection["curve"][2]
