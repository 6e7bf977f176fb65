"""Frozen-feature caching for `linear` and `mlp-head` (methods/frozen_head.py, bench/train.py,
through bench/harness.py's run_cell): cached and naive runs train identically without
augmentation, the backbone runs once per image and then never, the loop builds no image view,
records say what was cached and whether augmentation applied, and counts and gradients are those
of the unwrapped model."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import bench.transforms
from bench import feature_cache, harness
from bench.config import CellConfig
from bench.eval_view import EvalView
from bench.grid import GridRequest, data_key, method_settings, plan
from bench.measure import count_params, param_report
from methods.mlp_head import mlp_head
from tests.conftest import write_medmnist_npz

BATCH = 16
EPOCHS = 3
IMG = 32  # test_vit (patch 16, width 64, 6 blocks) at 32 px: 4 patches, fast on CPU
WIDTH = 64
SIZES = {"train": 48, "val": 24, "test": 24}  # write_medmnist_npz's default split sizes
STEPS = EPOCHS * SIZES["train"] // BATCH
ATOL = 1e-5


def batches(n: int) -> list[int]:
    """Batch sizes of an in-order pass over n images."""
    return [min(BATCH, n - start) for start in range(0, n, BATCH)]


# ---------------------------------------------------------------- a traced run_cell
@dataclasses.dataclass
class Run:
    cell: CellConfig
    record: dict[str, Any]
    model: nn.Module  # the adapted model, as training left it
    backbone: nn.Module  # the timm backbone, kept here even after the model released it
    backbone_before: dict[str, torch.Tensor]
    trainable_before: dict[str, torch.Tensor]
    # (phase, images in the batch, inference mode) per call of the backbone's patch_embed
    calls: list[tuple[str, int, bool]]
    grad_calls: Counter
    views: (
        Counter  # views the training loop builds (prepare_batch calls), by phase (fit or predict)
    )
    cache_builds: int
    test_logits: torch.Tensor

    def images(self, phase: str, inference: bool | None = None) -> list[int]:
        return [n for p, n, inf in self.calls if p == phase and inference in (None, inf)]


def traced_run(cell: CellConfig, data, source) -> Run:
    """run_cell with hooks on the backbone's patch_embed, the trainable tensors' gradients and
    the training loop's view builder, each tagged with the phase (preload / fit / predict)."""
    phase = ["build"]
    seen: dict[str, Any] = {"calls": [], "grads": Counter(), "views": Counter(), "builds": 0}
    build_model, preload, fit, predict = (
        harness.build_model,
        harness.preload_features,
        harness.fit,
        harness.predict,
    )
    build_cache, prepare = feature_cache.build_cache, bench.transforms.prepare_batch

    def traced_build(*args, **kwargs):
        out = build_model(*args, **kwargs)
        model = seen["model"] = out[0]
        backbone = seen["backbone"] = model.backbone
        seen["backbone_before"] = {n: p.detach().clone() for n, p in backbone.named_parameters()}
        seen["trainable_before"] = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        backbone.patch_embed.register_forward_hook(
            lambda _m, args, _o: (
                None  # probe images (the FLOP count and latency), not the data
                if phase[0] == "count"
                else seen["calls"].append(
                    (phase[0], len(args[0]), torch.is_inference_mode_enabled())
                )
            )
        )
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.register_hook(
                    lambda g, name=name: (
                        None if phase[0] == "count" else seen["grads"].update([name])
                    )
                )
        return out

    def in_phase(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = f"after {name}"

        return wrapper

    def traced_predict(*args, **kwargs):
        out = in_phase("predict", predict)(*args, **kwargs)
        seen["test_logits"] = out[0]
        return out

    def counted_view(*args, **kwargs):
        if phase[0] in ("fit", "predict"):  # the preload's un-augmented batches are no views
            seen["views"][phase[0]] += 1
        return prepare(*args, **kwargs)

    def counted_build_cache(*args, **kwargs):
        seen["builds"] += 1
        return build_cache(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "build_model", traced_build)
        mp.setattr(harness, "preload_features", in_phase("preload", preload))
        mp.setattr(harness, "fit", in_phase("fit", fit))
        mp.setattr(harness, "model_costs", in_phase("count", harness.model_costs))
        mp.setattr(harness, "predict", traced_predict)
        mp.setattr(bench.transforms, "prepare_batch", counted_view)
        mp.setattr(feature_cache, "build_cache", counted_build_cache)
        record = harness.run_cell(cell, data, source)
    assert record["status"] == "ok", record.get("traceback")
    return Run(
        cell=cell,
        record=record,
        model=seen["model"],
        backbone=seen["backbone"],
        backbone_before=seen["backbone_before"],
        trainable_before=seen["trainable_before"],
        calls=seen["calls"],
        grad_calls=seen["grads"],
        views=seen["views"],
        cache_builds=seen["builds"],
        test_logits=seen["test_logits"],
    )


def with_hparams(cell: CellConfig, **hparams) -> CellConfig:
    return dataclasses.replace(cell, hparams={**cell.hparams, **hparams})


# ---------------------------------------------------------------- the runs shared by tests
VARIANTS = {  # name -> (method, hyperparameters besides preload)
    "linear": ("linear", {}),
    "mlp-dropout0": ("mlp-head", {"dropout": 0.0}),
    "mlp-dropout0.1": ("mlp-head", {"dropout": 0.1}),
}


@dataclasses.dataclass
class Runs:
    cached: dict[str, Run]  # seed 0, preload=True; "linear" builds the cache, the rest hit it
    naive: dict[str, Run]  # seed 0, preload=False
    second_seed: Run  # linear, seed 1, preload=True: reuses the cache
    cached_augmented: Run  # linear, seed 0, preload=True, augment rrc-flip
    data: Any


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("head-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDPEFT_CACHE", str(root / "cache"))  # the first run must build the cache
    write_medmnist_npz(root / "pneumoniamnist.npz")
    # Backbone weights from a file: the same frozen backbone for every seed, so a second seed
    # may rightly reuse the cache.
    torch.manual_seed(0)
    save_file(timm.create_model("test_vit", img_size=IMG).state_dict(), str(root / "w.safetensors"))
    req = GridRequest(methods=["linear", "mlp-head"], datasets=["pneumoniamnist"], seeds=[0, 1],
                     backbone="test_vit", weights=str(root / "w.safetensors"), epochs=EPOCHS,
                     batch_size=BATCH, img_size=IMG, device="cpu", augment="none",
                     data_root=root, results=root / "results")  # fmt: skip
    p = plan(req, progress=False)
    cells = {(c.method, c.seed): c for c in p.cells}
    data = p.datasets[data_key(p.cells[0])]
    assert all(c.hparams["preload"] is True for c in p.cells)  # the default
    cached, naive = {}, {}
    for name, (method, hparams) in VARIANTS.items():  # "linear" first: it builds the cache
        cell = with_hparams(cells[(method, 0)], **hparams)
        cached[name] = traced_run(cell, data, p.source)
        naive[name] = traced_run(with_hparams(cell, preload=False), data, p.source)
    linear = cells[("linear", 0)]
    out = Runs(
        cached=cached,
        naive=naive,
        second_seed=traced_run(cells[("linear", 1)], data, p.source),
        cached_augmented=traced_run(
            dataclasses.replace(linear, augment="rrc-flip"), data, p.source
        ),
        data=data,
    )
    yield out
    mp.undo()


def final_head(run: Run) -> dict[str, torch.Tensor]:
    return {f"head.{n}": p.detach() for n, p in run.model.get_classifier().named_parameters()}


# ---------------------------------------------------------------- 1. cached == naive
@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_and_naive_runs_train_identically(runs: Runs, name: str) -> None:
    a, b = runs.cached[name], runs.naive[name]
    ca, cb = copy.deepcopy(a.record["config"]), copy.deepcopy(b.record["config"])
    assert ca["hparams"].pop("preload") is True and cb["hparams"].pop("preload") is False
    assert ca == cb and ca["augment"] == "none"  # the cells differ only in preload
    ta, tb = a.record["training"], b.record["training"]
    assert ta["best_epoch"] == tb["best_epoch"] and ta["steps"] == tb["steps"] == STEPS
    assert len(ta["history"]) == len(tb["history"]) == EPOCHS
    for ea, eb in zip(ta["history"], tb["history"], strict=True):
        assert ea["train_loss"] == pytest.approx(eb["train_loss"], rel=0, abs=ATOL)
        assert ea["val"] == pytest.approx(eb["val"], rel=0, abs=ATOL)
    assert a.record["metrics"]["test"] == pytest.approx(b.record["metrics"]["test"], abs=ATOL)
    torch.testing.assert_close(a.test_logits, b.test_logits, atol=ATOL, rtol=0)
    ha, hb = final_head(a), final_head(b)
    assert ha.keys() == hb.keys() == a.trainable_before.keys()
    for n in ha:
        torch.testing.assert_close(ha[n], hb[n], atol=ATOL, rtol=0)
        assert not torch.equal(ha[n], a.trainable_before[n]), f"{name}: {n} never trained"


def test_head_dropout_is_active_in_the_cached_run(runs: Runs) -> None:
    """So the dropout>0 equality above compares two runs that both drew dropout masks."""
    on, off = runs.cached["mlp-dropout0.1"], runs.cached["mlp-dropout0"]
    assert on.record["method_info"]["dropout"] == 0.1 and off.record["method_info"]["dropout"] == 0
    assert any(m.p == 0.1 for m in on.model.head.modules() if isinstance(m, nn.Dropout))
    losses = [[e["train_loss"] for e in r.record["training"]["history"]] for r in (on, off)]
    assert losses[0] != pytest.approx(losses[1], abs=1e-4)


def test_augmented_cell_is_never_cached(runs: Runs) -> None:
    """A cached feature cannot be augmented: with rrc-flip the head trains end to end on every
    step's view, and the record says why the cache was not used."""
    a, b = runs.cached_augmented, runs.cached["linear"]
    assert a.record["config"]["augment"] == "rrc-flip" and a.record["config"]["hparams"]["preload"]
    fc = a.record["feature_cache"]
    assert fc["used"] is False and "--augment rrc-flip" in fc["reason"]
    assert "--augment none" in fc["reason"]
    assert a.record["training"]["augment_applied"] == "rrc-flip"
    assert sum(a.images("fit", inference=False)) == EPOCHS * SIZES["train"]  # backbone every step
    assert a.views["fit"] > 0 and a.cache_builds == 0
    assert a.record["training"]["history"] != b.record["training"]["history"]  # views differ


# ---------------------------------------------------------------- 2. the backbone's calls
def test_backbone_runs_once_per_image_in_preload_then_never(runs: Runs) -> None:
    t = runs.cached["linear"]
    # Split by split, in order, in batches: every image exactly once, under no_grad.
    expected = [n for split in ("train", "val", "test") for n in batches(SIZES[split])]
    assert [n for _, n, _ in t.calls] == expected and sum(expected) == sum(SIZES.values())
    assert {p for p, _, _ in t.calls} == {"preload"}  # none in fit or predict
    assert t.model.backbone is None  # released: training could not have run it
    for run in (*runs.cached.values(), runs.second_seed):
        if run is not t:  # the cache existed: the backbone never ran at all
            assert run.calls == [] and run.cache_builds == 0 and run.model.backbone is None


def test_naive_run_runs_the_backbone_every_step(runs: Runs) -> None:
    for run in runs.naive.values():
        train = run.images("fit", inference=False)
        assert len(train) == run.record["training"]["steps"] == STEPS
        assert sum(train) == EPOCHS * SIZES["train"]
        assert run.images("fit", inference=True) == batches(SIZES["val"]) * EPOCHS
        assert run.images("predict") == batches(SIZES["test"])
        assert not run.images("preload") and run.cache_builds == 0
        assert run.model.backbone is run.backbone  # never released


def test_loop_builds_no_image_view_for_cached_heads(runs: Runs) -> None:
    """fit/predict skip prepare_batch for an image-free model; the naive model gets a view per
    training step, validation batch and test batch."""
    for run in (*runs.cached.values(), runs.second_seed):
        assert run.model.image_free is True and run.views == Counter()
    val, test = len(batches(SIZES["val"])), len(batches(SIZES["test"]))
    for run in runs.naive.values():
        assert run.model.image_free is False
        assert run.views == Counter({"fit": STEPS + EPOCHS * val, "predict": test})


# ---------------------------------------------------------------- 3. record fields
def test_cached_record_says_the_cache_was_built_then_hit(runs: Runs) -> None:
    first = runs.cached["linear"]
    fc = first.record["feature_cache"]
    assert fc["used"] is True and fc["hit"] is False and fc["dtype"] == "float32"
    assert first.cache_builds == len(SIZES) and set(fc["splits"]) == set(SIZES)
    for split, entry in fc["splits"].items():
        assert entry["images"] == SIZES[split] and entry["hit"] is False
        (array,) = (np.load(f) for f in Path(entry["path"]).glob("*.npy"))
        assert array.shape == (SIZES[split], WIDTH) and array.dtype == np.float32
    info = first.record["method_info"]
    assert info == {"head": "linear", "preload": True, "features": "pre_logits",
                    "feature_dim": WIDTH}  # fmt: skip
    assert first.record["training"]["augment_applied"] == "none"
    assert "preload" in first.record["cost"]["phases_s"]
    # Same backbone, weights, images and input: the MLP head and a second seed reuse it.
    for run in (runs.cached["mlp-dropout0"], runs.cached["mlp-dropout0.1"], runs.second_seed):
        hit = run.record["feature_cache"]
        assert hit["used"] is True and hit["hit"] is True
        for split, entry in hit["splits"].items():
            assert entry["hit"] is True and entry["path"] == fc["splits"][split]["path"]
    assert runs.second_seed.record["config"]["seed"] == 1


def test_cache_rows_are_the_backbones_pre_logits_of_unaugmented_images(runs: Runs) -> None:
    rec, backbone = runs.cached["linear"].record, runs.cached["linear"].backbone.eval()
    norm, pre = rec["normalization"], rec["preprocess"]
    view = EvalView(pre["interpolation"], pre["crop_pct"], pre["crop_mode"])  # test_vit's crop
    for split, part in runs.data.splits.items():
        x = bench.transforms.prepare_batch(part.images, img_size=IMG, mean=norm["mean"],
                                           std=norm["std"], train=False, eval_view=view)  # fmt: skip
        with torch.no_grad():  # timm's own pooled, normed head input, independent of the wrapper
            expected = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
        path = Path(rec["feature_cache"]["splits"][split]["path"]) / "pre_logits.npy"
        torch.testing.assert_close(torch.from_numpy(np.load(path)), expected, atol=ATOL, rtol=0)


def test_naive_record_says_no_cache_and_augmentation_applied(runs: Runs) -> None:
    for run in runs.naive.values():
        rec = run.record
        assert rec["feature_cache"] == {"used": False, "reason": "preload=false"}
        assert rec["method_info"]["preload"] is False
        assert rec["training"]["augment_applied"] == rec["config"]["augment"] == "none"
        assert "preload" not in rec["cost"]["phases_s"] and run.cache_builds == 0


def test_preload_is_a_set_able_hyperparameter() -> None:
    for method in ("linear", "mlp-head"):
        req = GridRequest(methods=[method], datasets=["demo"], seeds=[0], backbone="test_vit",
                         sets={method: {"preload": "false"}})  # fmt: skip
        assert method_settings(method, req)[1]["preload"] is False


# ---------------------------------------------------------------- 4. counts and gradients
def unwrapped_params(method: str, hparams: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The record's param block for the timm model adapted as before the wrapper existed: the
    head trained in place (linear) or swapped for the MLP (mlp-head)."""
    model = timm.create_model("test_vit", img_size=IMG, num_classes=num_classes)
    model.requires_grad_(False)
    head_params = count_params(model.get_classifier())
    backbone_params = count_params(model) - head_params
    if method == "mlp-head":
        h = {k: hparams[k] for k in ("layers", "dropout", "norm")}
        model.head = mlp_head(WIDTH, num_classes, hidden=hparams["hidden"] or WIDTH, **h)
    model.head.requires_grad_(True)
    return param_report(backbone_params, head_params, model, model.head)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_counts_equal_the_unwrapped_model(runs: Runs, name: str) -> None:
    method, _ = VARIANTS[name]
    for run in (runs.cached[name], runs.naive[name]):
        cell_hparams = run.record["config"]["hparams"]
        expected = unwrapped_params(method, cell_hparams, runs.data.num_classes)
        assert run.record["params"] == expected
    if method == "linear":
        assert runs.cached[name].record["params"]["trainable_params"] == WIDTH * 2 + 2


@pytest.mark.parametrize("which", ["cached", "naive"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradients_reach_exactly_the_head_and_the_backbone_stays_put(
    runs: Runs, name: str, which: str
) -> None:
    run = getattr(runs, which)[name]
    head = {f"head.{n}" for n, _ in run.model.get_classifier().named_parameters()}
    assert set(run.trainable_before) == head
    # A gradient at every training step for every head tensor, and for nothing else.
    assert set(run.grad_calls) == head
    assert set(run.grad_calls.values()) == {run.record["training"]["steps"]}
    for n, p in run.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, n
        assert torch.equal(p, run.backbone_before[n]), n
