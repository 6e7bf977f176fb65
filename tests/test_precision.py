"""Precision by device capability (bench.precision): what `auto` chooses on simulated GPUs and why,
explicit choices a device cannot run refused in one line, fp16 training with its loss scaler
(on CPU, where torch has fp16 autocast and a GradScaler too), the choice in the record, and the
MPS device in the device helpers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

import bench.train as train
from bench.errors import UserError
from bench.measure import PeakMemory, StepMemory, memory_baseline
from bench.measure.device import empty_cache, sync
from bench.precision import (
    autocast,
    backward_and_step,
    choose_precision,
    grad_scaler,
    possible_precisions,
    resolve_precision,
)
from bench.transforms import Preprocess

# ----------------------------------------------------------- auto on simulated devices


def simulate_gpu(monkeypatch, capability: tuple[int, int] | None) -> None:
    """torch sees one CUDA GPU of `capability` (None: none), and no MPS device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    bf16 = capability is not None and capability >= (8, 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("gpu", "capability", "expected"),
    [("V100", (7, 0), "fp16"), ("T4", (7, 5), "fp16"), ("RTX 2080", (7, 5), "fp16"),
     ("A100", (8, 0), "bf16"), ("RTX 3090", (8, 6), "bf16"), ("H100", (9, 0), "bf16")],
)  # fmt: skip
def test_auto_chooses_by_compute_capability(monkeypatch, gpu, capability, expected) -> None:
    from bench.grid import resolve_device

    simulate_gpu(monkeypatch, capability)
    device = resolve_device("auto")
    assert device == "cuda"
    choice = choose_precision("auto", device)
    assert (choice.requested, choice.resolved) == ("auto", expected), gpu
    assert f"compute capability {capability[0]}.{capability[1]}" in choice.reason
    assert resolve_precision("auto", "cuda:0") == expected
    # what a user asks for and the GPU runs is kept
    assert choose_precision("fp16", device).resolved == "fp16"
    assert choose_precision("fp32", device).resolved == "fp32"


def test_no_gpu_means_cpu_and_fp32(monkeypatch) -> None:
    from bench.grid import resolve_device

    simulate_gpu(monkeypatch, None)
    assert resolve_device("auto") == "cpu"
    choice = choose_precision("auto", "cpu")
    assert choice.resolved == "fp32" and "cpu runs fp32" in choice.reason
    with pytest.raises(UserError, match="no CUDA device is visible"):
        resolve_device("cuda")


def test_mps_is_chosen_after_cuda_and_runs_fp32_unless_fp16_is_asked(monkeypatch) -> None:
    from bench.grid import resolve_device

    simulate_gpu(monkeypatch, None)
    with pytest.raises(UserError, match="--device mps: torch has no MPS device here"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and resolve_device("mps") == "mps"
    choice = choose_precision("auto", "mps")
    assert choice.resolved == "fp32" and "--precision fp16 tries it" in choice.reason
    assert resolve_precision("fp16", "mps") == "fp16"
    with pytest.raises(UserError, match="on mps use fp16 or fp32"):
        resolve_precision("bf16", "mps")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: kind != "mps")
    with pytest.raises(UserError, match="this torch has no MPS autocast; use fp32"):
        resolve_precision("fp16", "mps")
    # CUDA first, when both are there
    simulate_gpu(monkeypatch, (8, 0))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_explicit_precision_the_device_lacks_is_refused(monkeypatch) -> None:
    simulate_gpu(monkeypatch, (7, 5))
    with pytest.raises(UserError) as exc:
        choose_precision("bf16", "cuda")
    message = str(exc.value)
    assert "\n" not in message and "compute capability 7.5" in message
    assert "use --precision fp16" in message
    for precision in ("bf16", "fp16"):
        with pytest.raises(UserError, match="on CPU use fp32"):
            choose_precision(precision, "cpu")
    with pytest.raises(UserError, match="must be one of auto, bf16, fp16, fp32"):
        choose_precision("fp8", "cuda")


def test_planning_for_gpus_elsewhere_does_not_ask_the_local_one(monkeypatch) -> None:
    """A Slurm login node (here with an old GPU of its own) cannot ask the jobs' GPUs: auto is
    bf16 and says so; `bench status` counts either precision as done."""
    simulate_gpu(monkeypatch, (7, 0))
    choice = choose_precision("auto", "cuda", elsewhere=True)
    assert choice.resolved == "bf16" and "--precision fp16 for older GPUs" in choice.reason
    assert choose_precision("bf16", "cuda", elsewhere=True).resolved == "bf16"
    assert possible_precisions("auto", "cuda") == ["bf16", "fp16"]
    assert possible_precisions("auto", "cpu") == possible_precisions("fp32", "mps") == ["fp32"]


def test_a_worker_refuses_bf16_its_gpu_lacks(monkeypatch) -> None:
    from bench.config import CellConfig
    from bench.launchers.worker import worker_plan

    simulate_gpu(monkeypatch, (7, 0))
    cell = CellConfig(method="linear", dataset="pneumoniamnist", seed=0, backbone="test_vit",
                      pretrained=False, weights=None, weights_sha256=None, epochs=1,
                      batch_size=8, img_size=32, device="cuda", precision="bf16",
                      optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                      grad_clip=1.0)  # fmt: skip
    with pytest.raises(UserError, match="use --precision fp16"):
        worker_plan({"cell": cell.to_dict(), "run_id": cell.run_id}, progress=False)


# ----------------------------------------------------------- the loss scaler's step


def linear_problem(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(6, 3), torch.randn(16, 6), torch.randint(0, 3, (16,))


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def test_an_inf_gradient_skips_the_step_and_halves_the_scale() -> None:
    model, x, y = linear_problem()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in params]
    hook = model.weight.register_hook(lambda g: torch.full_like(g, math.inf))
    stepped = backward_and_step(loss_of(model, x, y), opt, params, grad_clip=1.0, scaler=scaler)
    assert not stepped and scaler.get_scale() == 2.0**9
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    hook.remove()
    opt.zero_grad(set_to_none=True)
    stepped = backward_and_step(loss_of(model, x, y), opt, params, grad_clip=1.0, scaler=scaler)
    assert stepped and scaler.get_scale() == 2.0**9
    assert not torch.equal(model.weight, before[0])


@pytest.mark.parametrize("scaled", [False, True])
def test_clipping_sees_unscaled_gradients(scaled: bool) -> None:
    """SGD's first step moves the weights by lr x the clipped gradient: a norm of exactly
    `grad_clip`, with or without the scaler. Clipping the scaled gradients would shrink the
    step by the scale (2**12)."""
    model, x, y = linear_problem()
    params = list(model.parameters())
    loss_of(model, x, y).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()
    model.zero_grad(set_to_none=True)
    clip = norm / 4
    before = [p.detach().clone() for p in params]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if scaled else None
    stepped = backward_and_step(loss_of(model, x, y), torch.optim.SGD(params, lr=1.0), params,
                                grad_clip=clip, scaler=scaler)  # fmt: skip
    moved = torch.linalg.vector_norm(
        torch.stack([(p - b).norm() for p, b in zip(params, before, strict=True)])
    ).item()
    assert stepped and moved == pytest.approx(clip, rel=1e-4)


def test_scaler_and_autocast_only_where_asked() -> None:
    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "bf16") is None and grad_scaler(cpu, "fp32") is None
    assert isinstance(grad_scaler(cpu, "fp16"), torch.amp.GradScaler)
    lin = nn.Linear(4, 2)
    with autocast(cpu, "fp16"):
        assert lin(torch.randn(1, 4)).dtype == torch.float16
    with autocast(cpu, "fp32"):
        assert lin(torch.randn(1, 4)).dtype == torch.float32
    with autocast(torch.device("meta"), "bf16"):  # FLOPs are counted on meta: nothing to cast
        pass


# ----------------------------------------------------------- fit in fp16


def tiny_fit_setup(n: int = 32):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=2, num_heads=2,
                              num_classes=3)  # fmt: skip
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    model.blocks[1].norm1.requires_grad_(True)
    images = torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(n) % 3
    settings = train.TrainSettings(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-2, weight_decay=0.0,
        warmup_epochs=0.0, grad_clip=1.0, seed=3, device=torch.device("cpu"), precision="fp16",
        preprocess=Preprocess(img_size=16, augment="none"),
    )  # fmt: skip
    return model, (images, labels), settings


def test_fp16_fit_trains_exactly_the_trainable_tensors(monkeypatch) -> None:
    model, data, settings = tiny_fit_setup()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias", "blocks.1.norm1.weight",
                         "blocks.1.norm1.bias"}  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with_grad: list[set[str]] = []
    dtypes: list[torch.dtype] = []
    step, logits_of = train.backward_and_step, train.logits_of

    def spy_step(loss, opt, params, **kwargs):
        stepped = step(loss, opt, params, **kwargs)
        with_grad.append({n for n, p in model.named_parameters() if p.grad is not None})
        return stepped

    def spy_logits(model_, *args):
        out = logits_of(model_, *args)
        if model_.training:
            dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(train, "backward_and_step", spy_step)
    monkeypatch.setattr(train, "logits_of", spy_logits)
    result = train.fit(model, data, (data[0][:8], data[1][:8]), settings,
                       score=lambda logits, y: (-float(logits.sum()), {}))  # fmt: skip
    assert result.steps == 8 == len(with_grad) and set(dtypes) == {torch.float16}
    assert all(names == trainable for names in with_grad)
    assert result.skipped_steps is not None and 0 <= result.skipped_steps < result.steps
    assert result.loss_scale is not None and result.loss_scale >= 1.0
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in trainable), name


def test_fp16_fit_counts_a_skipped_step_and_diverges_when_every_step_overflows(
    monkeypatch,
) -> None:
    model, data, settings = tiny_fit_setup()
    calls = {"n": 0}

    def overflow(g: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.full_like(g, math.inf) if calls["n"] == 3 else g

    hook = model.head.weight.register_hook(overflow)
    result = train.fit(model, data, (data[0][:8], data[1][:8]), settings,
                       score=lambda logits, y: (0.0, {}))  # fmt: skip
    assert result.skipped_steps >= 1 and result.steps == 8
    # the history's loss is the forward's, finite whatever the scaler did
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    hook.remove()

    model, data, settings = tiny_fit_setup()
    model.head.weight.register_hook(lambda g: torch.full_like(g, math.inf))
    monkeypatch.setattr(train, "grad_scaler",
                        lambda device, precision: torch.amp.GradScaler("cpu", init_scale=4.0))  # fmt: skip
    with pytest.raises(train.Diverged, match="loss scale fell below 1") as exc:
        train.fit(model, data, (data[0][:8], data[1][:8]), settings,
                  score=lambda logits, y: (0.0, {}))  # fmt: skip
    assert exc.value.step == 2  # scale 4 -> 2 -> 1 -> 0.5: the third skipped step


# ----------------------------------------------------------- the choice in the record


def test_plan_and_record_say_which_precision_auto_chose_and_why(
    monkeypatch, tiny_data_root, tmp_path
) -> None:
    from bench.artefacts import PENDING as PENDING_ARTEFACTS
    from bench.grid import GridRequest, data_key, plan
    from bench.harness import run_cell
    from bench.predictions import PENDING
    from bench.predictions import PENDING as PENDING_PREDICTIONS
    from bench.record import Record

    simulate_gpu(monkeypatch, (7, 5))
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0],
                      backbone="test_vit", pretrained=False, epochs=1, batch_size=16,
                      img_size=32, device="cuda", results=tmp_path / "gpu",
                      data_root=tiny_data_root)  # fmt: skip
    gpu = plan(req, dry_run=True, progress=False)
    (cell,) = gpu.cells
    assert (cell.device, cell.precision) == ("cuda", "fp16")
    note = gpu.annotations[cell.run_id]
    assert note["precision_requested"] == "auto"
    assert "lacks bf16 tensor cores" in note["precision_reason"]
    assert "hyperparameters" in note  # added to, not replaced

    simulate_gpu(monkeypatch, None)
    cpu = plan(req.replace(device="auto", results=tmp_path / "cpu"), progress=False)
    (cell,) = cpu.cells
    assert cpu.annotations[cell.run_id]["precision_reason"].startswith("auto: cpu runs fp32")
    # the same cell in fp16 (CPU autocast stands in for a GPU's): the scaler in its record
    fp16 = dataclasses.replace(cell, precision="fp16")
    rec = run_cell(fp16, cpu.datasets[data_key(fp16)], cpu.source)
    assert rec["status"] == "ok", rec.get("error")
    scaler = rec["training"]["grad_scaler"]
    assert 0 <= scaler["skipped_steps"] < rec["training"]["steps"] and scaler["loss_scale"] > 0
    # a record with the new fields reads back
    rec.pop(PENDING)
    rec |= cpu.annotations[cell.run_id]
    # (without the predictions and tensors save_record writes beside it)
    written = {k: v for k, v in rec.items() if k not in (PENDING_PREDICTIONS, PENDING_ARTEFACTS)}
    assert Record.from_json(json.loads(json.dumps(written))).precision_requested == "auto"


def test_bench_run_writes_the_choice_into_the_record(tiny_data_root, tmp_path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app
    from tests.conftest import grid_args

    results = tmp_path / "results"
    args = grid_args(tiny_data_root, results, "--methods", "linear", "--epochs", "1",
                     "--device", "cpu")  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (path,) = [p for p in results.glob("*.json") if not p.name.startswith(".")]
    rec = json.loads(path.read_text())
    assert rec["config"]["precision"] == "fp32"
    assert rec["precision_requested"] == "auto"
    assert rec["precision_reason"].startswith("auto: cpu runs fp32")
    assert "grad_scaler" not in rec["training"]  # fp32 has no loss scaler


# ----------------------------------------------------------- MPS in the device helpers


def test_mps_sync_cache_memory_and_loaders(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("sync"))
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("empty"))
    allocated = iter([10 * 2**20, 30 * 2**20])
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: next(allocated))
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 64 * 2**20)
    mps = torch.device("mps")
    sync(mps)
    empty_cache(mps)
    assert calls == ["sync", "empty"]
    assert memory_baseline(mps) is None  # MPS keeps no peak: own_mb is not measured
    assert not StepMemory(mps, 1.0).host  # the host op counter would count no MPS tensor
    with PeakMemory(mps, baseline_mb=1.0) as mem:
        pass
    out = mem.result
    assert out["device"] == "mps" and "own_mb" not in out
    assert (out["mps_allocated_start_mb"], out["mps_allocated_end_mb"]) == (10.0, 30.0)
    assert out["mps_driver_allocated_mb"] == 64.0
    assert "peak is not measured" in out["memory_source"]
    assert not train.pin_memory(mps) and train.pin_memory(torch.device("cuda"))
