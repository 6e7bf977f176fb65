"""FPT+ through the harness and the CLI (bench/harness.py, bench/feature_cache.py, bench/grid/):
cached and live features train identically, the frozen LPM runs once per image and then never,
records carry the cache and cost fields, a corrupt cache is rebuilt, and the resolution rule
reaches the record."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
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
from typer.testing import CliRunner

from bench import feature_cache, harness
from bench.backbones import method_img_size
from bench.cli import app
from bench.config import CellConfig
from bench.eval_view import EvalView
from bench.feature_cache import human_bytes
from bench.grid import GridRequest, data_key, plan
from bench.measure import count_params
from bench.transforms import prepare_batch
from methods import get_method
from tests.conftest import write_medmnist_npz

BATCH = 16
EPOCHS = 2
SIZES = {"train": 48, "val": 24, "test": 24}  # write_medmnist_npz's default split sizes
# test_vit: 160 px, patch 16 -> 100 patches + CLS = 101 tokens, keep int(101 * 0.2) = 20;
# 6 blocks (FPT+'s default layers=6 takes all of them), 2 heads of width 32.
FEATURE_SHAPE = (6, 2, 20, 32)
BYTES_PER_IMAGE = 2 * math.prod(FEATURE_SHAPE) * 4  # k and v, float32
TRAIN_STEPS = EPOCHS * SIZES["train"] // BATCH

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def batches(n: int) -> list[int]:
    """Batch sizes of an in-order pass over n images."""
    return [min(BATCH, n - start) for start in range(0, n, BATCH)]


# ---------------------------------------------------------------- a traced run_cell
@dataclasses.dataclass
class Trace:
    """What happened inside one run_cell: LPM calls by phase, gradients, the model."""

    model: nn.Module | None = None
    lpm: nn.Module | None = None
    lpm_before: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    trainable_before: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    # (phase, images in the batch, inference mode) per call of the LPM's patch_embed
    calls: list[tuple[str, int, bool]] = dataclasses.field(default_factory=list)
    lpm_after_preload: Any = "preload never ran"
    grad_calls: Counter = dataclasses.field(default_factory=Counter)
    grad_nonzero: set[str] = dataclasses.field(default_factory=set)
    test_logits: torch.Tensor | None = None
    cache_builds: int = 0

    def images(self, phase: str, inference: bool | None = None) -> list[int]:
        return [n for p, n, inf in self.calls if p == phase and inference in (None, inf)]


@dataclasses.dataclass
class Run:
    cell: CellConfig
    record: dict[str, Any]
    trace: Trace


def traced_run(cell: CellConfig, data, source) -> Run:
    """run_cell with hooks on the LPM's patch_embed and the trainable tensors, and the phase
    (preload / fit / predict) it is in, so calls and gradients can be counted exactly."""
    trace = Trace()
    phase = ["build"]
    build_model, preload, fit, predict = (
        harness.build_model,
        harness.preload_features,
        harness.fit,
        harness.predict,
    )
    build_cache = feature_cache.build_cache

    def traced_build(*args, **kwargs):
        out = build_model(*args, **kwargs)
        model = trace.model = out[0]
        trace.lpm = model.lpm
        trace.lpm_before = {n: p.detach().clone() for n, p in model.lpm.named_parameters()}
        trace.trainable_before = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        model.lpm.patch_embed.register_forward_hook(
            lambda _m, args, _o: (
                None  # probe images (the FLOP count and latency), not the data
                if phase[0] == "count"
                else trace.calls.append((phase[0], len(args[0]), torch.is_inference_mode_enabled()))
            )
        )
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.register_hook(
                    lambda g, name=name: (
                        None if phase[0] == "count" else _count_grad(trace, name, g)
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
                if name == "preload":
                    trace.lpm_after_preload = trace.model.lpm

        return wrapper

    def traced_predict(*args, **kwargs):
        out = in_phase("predict", predict)(*args, **kwargs)
        trace.test_logits = out[0]
        return out

    def counted_build_cache(*args, **kwargs):
        trace.cache_builds += 1
        return build_cache(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "build_model", traced_build)
        mp.setattr(harness, "preload_features", in_phase("preload", preload))
        mp.setattr(harness, "fit", in_phase("fit", fit))
        mp.setattr(harness, "model_costs", in_phase("count", harness.model_costs))
        mp.setattr(harness, "predict", traced_predict)
        mp.setattr(feature_cache, "build_cache", counted_build_cache)
        record = harness.run_cell(cell, data, source)
    assert record["status"] == "ok", record.get("traceback")
    return Run(cell, record, trace)


def _count_grad(trace: Trace, name: str, grad: torch.Tensor) -> None:
    trace.grad_calls[name] += 1
    if grad.abs().sum() > 0:
        trace.grad_nonzero.add(name)


def live(cell: CellConfig) -> CellConfig:
    return dataclasses.replace(cell, hparams={**cell.hparams, "preload": False})


def fpt_cells(data_root: Path, seeds: list[int], **kw) -> tuple[list[CellConfig], Any, Any]:
    req = GridRequest(methods=["fpt"], datasets=["pneumoniamnist"], seeds=seeds, backbone="test_vit",
                     epochs=EPOCHS, batch_size=BATCH, device="cpu", data_root=data_root,
                     results=data_root / "results", **kw)  # fmt: skip
    p = plan(req, progress=False)
    return p.cells, p.datasets[data_key(p.cells[0])], p.source


# ---------------------------------------------------------------- three runs shared by tests
@dataclasses.dataclass
class Runs:
    cached: Run  # seed 0, preload=True, cache built
    live: Run  # seed 0, preload=False
    second: Run  # seed 1, preload=True, cache reused
    data: Any
    source: Any


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("fpt-harness")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDPEFT_CACHE", str(root / "cache"))  # a first run must build, not find, the cache
    write_medmnist_npz(root / "pneumoniamnist.npz")
    # Pretrained-from-file LPM: the same frozen weights for every seed, so a second seed may
    # rightly reuse the cache (a random LPM may not; see the regression test below).
    torch.manual_seed(0)
    save_file(timm.create_model("test_vit").state_dict(), str(root / "lpm.safetensors"))
    (cell0, cell1), data, source = fpt_cells(root, [0, 1], weights=str(root / "lpm.safetensors"))
    assert cell0.hparams["preload"] is True and source.weights_sha256
    out = Runs(
        cached=traced_run(cell0, data, source),
        live=traced_run(live(cell0), data, source),
        second=traced_run(cell1, data, source),
        data=data,
        source=source,
    )
    yield out
    mp.undo()


# ---------------------------------------------------------------- 1. cached == live
@pytest.mark.slow
def test_cached_and_live_features_train_identically(runs: Runs) -> None:
    a, b = runs.cached, runs.live
    ca, cb = copy.deepcopy(a.record["config"]), copy.deepcopy(b.record["config"])
    assert ca["hparams"].pop("preload") is True and cb["hparams"].pop("preload") is False
    assert ca == cb  # the cells differ only there
    assert a.record["run_id"] != b.record["run_id"]
    torch.testing.assert_close(a.trace.test_logits, b.trace.test_logits, atol=1e-6, rtol=1e-5)
    ha, hb = a.record["training"]["history"], b.record["training"]["history"]
    assert len(ha) == len(hb) == EPOCHS
    for ea, eb in zip(ha, hb, strict=True):
        assert ea["train_loss"] == pytest.approx(eb["train_loss"], rel=1e-5, abs=1e-7)
        assert ea["val"] == pytest.approx(eb["val"], rel=1e-5, abs=1e-7)
    assert a.record["metrics"]["test"] == pytest.approx(b.record["metrics"]["test"], rel=1e-5)
    assert a.record["training"]["best_epoch"] == b.record["training"]["best_epoch"]
    assert a.record["training"]["steps"] == b.record["training"]["steps"] == TRAIN_STEPS


def test_cache_rows_are_unaugmented_features_in_image_order(runs: Runs) -> None:
    """Row i of each split's cache is a fresh LPM's features of image i, un-augmented."""
    cell, rec = runs.cached.cell, runs.cached.record
    harness.seed_everything(cell.seed, torch.device("cpu"))
    model = harness.build_model(cell, runs.source, runs.data.num_classes)[0].eval()
    norm, pre = rec["normalization"], rec["preprocess"]
    view = EvalView(pre["interpolation"], pre["crop_pct"], pre["crop_mode"])  # test_vit's crop
    for split, part in runs.data.splits.items():
        x = prepare_batch(part.images, img_size=cell.img_size, mean=norm["mean"],
                          std=norm["std"], train=False, eval_view=view)  # fmt: skip
        expected = model.frozen_features(x)
        path = Path(rec["feature_cache"]["splits"][split]["path"])
        for name in ("k", "v"):
            cached = torch.from_numpy(np.load(path / f"{name}.npy"))
            assert cached.shape == (SIZES[split], *FEATURE_SHAPE)
            torch.testing.assert_close(cached, expected[name], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 2. the LPM's calls
def test_lpm_runs_once_per_image_in_preload_then_never(runs: Runs) -> None:
    t = runs.cached.trace
    # Split by split, in order, in batches: every image exactly once.
    expected = [n for split in ("train", "val", "test") for n in batches(SIZES[split])]
    assert [n for _, n, _ in t.calls] == expected and sum(expected) == sum(SIZES.values())
    assert {p for p, _, _ in t.calls} == {"preload"}  # none in fit or predict
    assert t.lpm_after_preload is None and t.model.lpm is None


def test_live_features_run_the_lpm_every_step(runs: Runs) -> None:
    t, rec = runs.live.trace, runs.live.record
    train_calls = t.images("fit", inference=False)  # training steps (no_grad, not inference)
    assert len(train_calls) == rec["training"]["steps"] == TRAIN_STEPS
    assert sum(train_calls) == EPOCHS * SIZES["train"]
    assert t.images("fit", inference=True) == batches(SIZES["val"]) * EPOCHS  # validation
    assert t.images("predict") == batches(SIZES["test"])
    assert not t.images("preload") and t.lpm_after_preload == "preload never ran"
    assert t.model.lpm is t.lpm  # never released


# ---------------------------------------------------------------- 3. record fields
def test_cached_record_fields(runs: Runs) -> None:
    rec, t = runs.cached.record, runs.cached.trace
    fc = rec["feature_cache"]
    assert fc["used"] is True and fc["hit"] is False and fc["dtype"] == "float32"
    assert set(fc["splits"]) == set(SIZES) and t.cache_builds == len(SIZES)
    total = 0
    for split, entry in fc["splits"].items():
        assert entry["images"] == SIZES[split] and entry["hit"] is False
        assert entry["rebuilt_because"] is None and entry["seconds"] > 0
        files = sorted(Path(entry["path"]).glob("*.npy"))
        assert [f.name for f in files] == ["k.npy", "v.npy"]
        assert entry["bytes"] == sum(f.stat().st_size for f in files)
        for f in files:
            array = np.load(f, mmap_mode="r")
            assert array.shape == (SIZES[split], *FEATURE_SHAPE) and array.dtype == np.float32
            assert array.offset + array.nbytes == f.stat().st_size  # header + data, nothing else
        total += entry["bytes"]
    assert fc["bytes"] == total > sum(SIZES.values()) * BYTES_PER_IMAGE
    cost = rec["cost"]
    assert {"preload", "train", "eval"} <= set(cost["memory"])
    assert cost["phases_s"]["preload"] > 0
    info = rec["method_info"]
    assert (info["lpm_size"], info["side_size"], info["keep_tokens"]) == (160, 64, 20)
    assert rec["config"]["img_size"] == info["lpm_size"]
    # The reference's formula with an independent LPM count: test_vit at its native 160 px
    # with a 1000-class head.
    lpm_1k = count_params(timm.create_model("test_vit", num_classes=1000))
    trainable = rec["params"]["trainable_params"]
    assert rec["params"]["paper_trainable_pct"] == pytest.approx(
        100 * trainable / (trainable + lpm_1k), rel=1e-12
    )


def test_second_seed_reuses_the_cache_without_computing(runs: Runs) -> None:
    first, rec, t = runs.cached.record, runs.second.record, runs.second.trace
    assert rec["config"]["seed"] == 1 and rec["run_id"] != first["run_id"]
    fc = rec["feature_cache"]
    assert fc["used"] is True and fc["hit"] is True
    assert fc["bytes"] == first["feature_cache"]["bytes"]
    for split, entry in fc["splits"].items():
        assert entry["hit"] is True and entry["rebuilt_because"] is None
        assert entry["path"] == first["feature_cache"]["splits"][split]["path"]
    assert t.cache_builds == 0 and t.calls == []  # no recompute: the LPM never ran
    assert t.model.lpm is None


def test_live_record_fields(runs: Runs) -> None:
    rec = runs.live.record
    assert rec["feature_cache"] == {"used": False}
    assert "preload" not in rec["cost"]["phases_s"] and "preload" not in rec["cost"]["memory"]
    assert {"train", "eval"} <= set(rec["cost"]["memory"])
    assert rec["method_info"]["preload"] is False and runs.live.trace.cache_builds == 0


# ---------------------------------------------------------------- 4. gradients
def test_gradients_reach_exactly_fusion_and_side(runs: Runs) -> None:
    t, rec = runs.cached.trace, runs.cached.record
    trainable = set(t.trainable_before)
    every = {n for n, _ in t.model.named_parameters()} | {f"lpm.{n}" for n in t.lpm_before}
    assert trainable == {n for n in every if n.startswith(("fusion.", "side."))}
    assert every - trainable == {f"lpm.{n}" for n in t.lpm_before}
    # A gradient at every step for every trainable tensor, and for nothing else.
    assert set(t.grad_calls) == trainable == t.grad_nonzero
    assert set(t.grad_calls.values()) == {rec["training"]["steps"]}
    final = dict(t.model.named_parameters())
    assert {n for n, p in final.items() if p.requires_grad} == trainable
    assert all(not torch.equal(final[n], t.trainable_before[n]) for n in trainable)
    for name, p in t.lpm.named_parameters():  # the released LPM: untouched, never a gradient
        assert not p.requires_grad and p.grad is None, name
        assert torch.equal(p, t.lpm_before[name]), name


# ---------------------------------------------------------------- 5. the CLI
def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


@pytest.mark.slow
def test_cli_cached_and_live(tmp_path: Path, tiny_data_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width otherwise
    results = tmp_path / "results"
    base = ("run", "--methods", "fpt", "--datasets", "pneumoniamnist", "--data-root",
            str(tiny_data_root), "--backbone", "test_vit", "--no-pretrained", "--epochs", "1",
            "--batch-size", str(BATCH), "--device", "cpu", "--results", str(results),
            "--no-progress")  # fmt: skip
    res_live = bench(*base, "--set", "fpt.preload=false", "--set", "fpt.lr=0.002")
    assert res_live.exit_code == 0, res_live.output
    assert "frozen-feature cache" not in res_live.output  # no cache, nothing to announce
    res_cached = bench(*base)
    assert res_cached.exit_code == 0, res_cached.output
    recs = {r["config"]["hparams"]["preload"]: r for r in _records(results)}
    assert set(recs) == {True, False}
    assert recs[True]["run_id"] != recs[False]["run_id"]
    for rec in recs.values():
        assert rec["status"] == "ok" and rec["config"]["method"] == "fpt-plus"
    # The alias's --set reaches fpt-plus; the other run keeps the registered default.
    assert recs[False]["config"]["lr"] == 0.002
    assert recs[True]["config"]["lr"] == get_method("fpt-plus").lr != 0.002
    assert recs[False]["feature_cache"] == {"used": False}
    assert recs[True]["feature_cache"]["used"] is True
    assert recs[True]["feature_cache"]["hit"] is False

    out = res_cached.output
    size = human_bytes(sum(SIZES.values()) * BYTES_PER_IMAGE)
    note = (
        f"note fpt-plus on pneumoniamnist: frozen-feature cache of {size} "
        f"({human_bytes(BYTES_PER_IMAGE)} per image, float32; {size} to write)"
    )
    assert note in out and "--set fpt-plus.preload=false runs without it" in out
    assert out.index(note) < out.index("ok pneumoniamnist/fpt-plus/seed 0")  # before running

    again = bench(*base, "--force")
    assert again.exit_code == 0, again.output
    assert "float32; already cached)" in again.output
    cached = [r for r in _records(results) if r["config"]["hparams"]["preload"]]
    assert len(cached) == 1 and cached[0]["feature_cache"]["hit"] is True
    done = bench(*base)  # every cell finished: nothing will use the cache, nothing to announce
    assert done.exit_code == 0 and "frozen-feature cache" not in done.output, done.output


def _grid_img(output: str) -> dict[str, str]:
    """method -> the dry-run table's img column."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "run id" in line)
    cols = [c.strip() for c in lines[start].split("┃")]
    method, img = cols.index("method"), cols.index("img")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("└"))  # its table only
    rows = [[c.strip() for c in line.split("│")] for line in lines[start:end]
            if line.startswith("│")]  # fmt: skip
    return {row[method]: row[img] for row in rows if row[method]}


def test_dry_run_grid_shows_img_size(tmp_path: Path, tiny_data_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    base = ("run", "--methods", "fpt,linear", "--datasets", "pneumoniamnist", "--data-root",
            str(tiny_data_root), "--backbone", "test_vit", "--no-pretrained", "--device", "cpu",
            "--results", str(tmp_path / "r"), "--dry-run")  # fmt: skip
    plain = bench(*base)
    assert plain.exit_code == 0, plain.output
    # The card's 28-px images: FPT+ never goes below the backbone's native 160.
    assert _grid_img(plain.output) == {"fpt-plus": "160", "linear": "160"}
    sized = bench(*base, "--img-size", "48")
    assert _grid_img(sized.output) == {"fpt-plus": "48", "linear": "48"}
    pinned = bench(*base, "--img-size", "48", "--set", "fpt.lpm_size=64")
    assert _grid_img(pinned.output) == {"fpt-plus": "64", "linear": "48"}
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 6. a corrupt cache
def test_corrupt_cache_file_is_rebuilt_with_identical_results(
    tmp_path: Path, tiny_data_root: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    (cell,), data, source = fpt_cells(tiny_data_root, [0], pretrained=False)
    first = traced_run(cell, data, source)
    k_file = Path(first.record["feature_cache"]["splits"]["train"]["path"]) / "k.npy"
    good = k_file.read_bytes()
    offset = np.load(k_file, mmap_mode="r").offset
    bad = bytearray(good)
    for i in range(offset + 100, offset + 104):  # inside the data, so the size is unchanged
        bad[i] ^= 0xFF
    k_file.write_bytes(bytes(bad))

    second = traced_run(cell, data, source)
    fc = second.record["feature_cache"]
    assert fc["hit"] is False
    assert fc["splits"]["train"]["hit"] is False
    assert "k.npy" in fc["splits"]["train"]["rebuilt_because"]
    assert "checksum" in fc["splits"]["train"]["rebuilt_because"]
    for split in ("val", "test"):
        assert fc["splits"][split]["hit"] is True and fc["splits"][split]["rebuilt_because"] is None
    # Only the train split was recomputed, every train image once.
    assert second.trace.cache_builds == 1 and [n for _, n, _ in second.trace.calls] == batches(
        SIZES["train"]
    )
    assert k_file.read_bytes() == good
    torch.testing.assert_close(second.trace.test_logits, first.trace.test_logits, atol=0, rtol=0)
    assert second.record["training"]["history"] == first.record["training"]["history"]
    assert second.record["metrics"] == first.record["metrics"]


# ---------------------------------------------------------------- 7. the resolution rule
@pytest.mark.slow
def test_resolution_rule_reaches_the_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    root.mkdir()
    write_medmnist_npz(root / "pneumoniamnist.npz", n=(16, 8, 8), size=180)

    def run(results: Path, *extra: str) -> dict[str, dict]:
        res = bench("run", "--methods", "fpt,linear", "--datasets", "pneumoniamnist",
                    "--data-root", str(root), "--backbone", "test_vit", "--no-pretrained",
                    "--epochs", "1", "--batch-size", str(BATCH), "--device", "cpu",
                    "--results", str(results), "--no-progress", *extra)  # fmt: skip
        assert res.exit_code == 0, res.output
        recs = {r["config"]["method"]: r for r in _records(results)}
        assert all(r["status"] == "ok" for r in recs.values()), recs
        return recs

    recs = run(tmp_path / "rule")
    fpt = recs["fpt-plus"]
    rule = method_img_size(
        "fpt-plus", fpt["config"]["hparams"], requested=None, backbone="test_vit", data_size=180
    )
    # 32 patches a side (512) capped at the stored 180 px, rounded down to the 16-px patch.
    assert fpt["config"]["img_size"] == rule == 176
    assert fpt["method_info"]["lpm_size"] == 176
    assert recs["linear"]["config"]["img_size"] == 160  # test_vit's native size

    recs = run(tmp_path / "fixed", "--img-size", "48")
    assert {m: r["config"]["img_size"] for m, r in recs.items()} == {"fpt-plus": 48, "linear": 48}
    assert recs["fpt-plus"]["method_info"]["lpm_size"] == 48


# ---------------------------------------------------------------- regressions found in review
@pytest.mark.slow
def test_random_lpm_features_are_not_shared_across_seeds(
    tmp_path: Path, tiny_data_root: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    (cell0, cell1), data, source = fpt_cells(tiny_data_root, [0, 1], pretrained=False)
    traced_run(cell0, data, source)
    cached = traced_run(cell1, data, source)
    reference = traced_run(live(cell1), data, source)
    torch.testing.assert_close(
        cached.trace.test_logits, reference.trace.test_logits, atol=1e-6, rtol=1e-5
    )


def test_dry_run_cells_match_the_run(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    write_medmnist_npz(root / "pneumoniamnist.npz", n=(8, 4, 4), size=180)

    def cells(dry_run: bool) -> list[tuple[str, int, str]]:
        req = GridRequest(methods=["fpt"], datasets=["pneumoniamnist"], seeds=[0],
                         backbone="test_vit", pretrained=False, device="cpu", data_root=root,
                         results=tmp_path / "r")  # fmt: skip
        return [(c.method, c.img_size, c.run_id) for c in plan(req, dry_run=dry_run).cells]

    assert cells(dry_run=True) == cells(dry_run=False)


def test_few_shot_views_share_val_and_test_features(
    tmp_path: Path, tiny_data_root: Path, monkeypatch
) -> None:
    """Two few-shot samples of one dataset differ in train only: their val and test features
    come from one cache entry, and each train sample gets its own."""
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    res = bench("run", "--methods", "fpt", "--datasets", "pneumoniamnist", "--data-root",
                str(tiny_data_root), "--backbone", "test_vit", "--no-pretrained", "--epochs", "1",
                "--batch-size", str(BATCH), "--device", "cpu", "--results", str(results),
                "--shots", "3", "--split-seeds", "0,1", "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    first, second = sorted(_records(results), key=lambda r: r["config"]["split_seed"])
    assert first["dataset"]["sizes"]["train"] == second["dataset"]["sizes"]["train"] == 6
    a, b = first["feature_cache"]["splits"], second["feature_cache"]["splits"]
    assert a["train"]["path"] != b["train"]["path"] and not b["train"]["hit"]
    for split in ("val", "test"):
        assert a[split]["path"] == b[split]["path"]
        assert not a[split]["hit"] and b[split]["hit"]
