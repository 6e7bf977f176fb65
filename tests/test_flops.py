"""FLOPs per image (bench.measure.flops_per_image), merged methods, and batch-1 latency: exact
counts on hand-computable models, every registered method on a tiny ViT, and models left as they
were."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import methods
from bench.backbone_config import weightless
from bench.measure import batch1_latency, flops_per_image
from bench.measure.flops import FROM_FEATURES, WHOLE_MODEL
from bench.train import set_train_mode
from bench.train_free import training_free
from methods.ssf import ScaleShift
from tests.conftest import tiny_vit

ALL = methods.list_methods()
MERGING = [m for m in ALL if methods.get_method(m).merge is not None]
C, SIZE = 3, 32
# tiny_vit: 32 px in 16 px patches -> 4 patches + CLS, width 32, 2 blocks, MLP 4x
N, D, DEPTH, PATCH_IN = 5, 32, 2, 3 * 16 * 16
GIGA = 1e9


def adapted(name: str, **hparams) -> nn.Module:
    torch.manual_seed(0)
    spec = methods.get_method(name)
    return spec.build(tiny_vit(C), **{**spec.hparams, **hparams})


def meta_backbone() -> nn.Module:
    # shapes are all a count needs: on the meta device where timm builds there (as the harness)
    return weightless(lambda: tiny_vit(C))


def count(model: nn.Module, name: str | None = None, **kw) -> dict:
    merge = methods.get_method(name).merge if name else None
    return flops_per_image(
        model, img_size=SIZE, device="cpu", backbone=meta_backbone(), merge=merge, **kw
    )


def perturbed(model: nn.Module) -> nn.Module:
    """Trained-looking adapters: every trainable tensor moved off its (often identity) start."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


# ------------------------------------------------------------------ hand-computable counts


def test_linear_layer_is_two_flops_per_multiply_add() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    out = flops_per_image(model, img_size=8, device="cpu")
    assert out["inference_gflops"] * GIGA == pytest.approx(2 * 192 * 5)
    # backward: the weight gradient only (the image needs none), another in·out multiply-adds
    assert out["train_gflops"] * GIGA == pytest.approx(2 * 2 * 192 * 5)
    assert out["train_counts"] == WHOLE_MODEL
    assert out["inference_fixed_gflops"] == 0.0 and out["train_fixed_gflops"] == 0.0
    assert out["merged_inference_gflops"] is None and out["backbone_gflops"] is None
    assert out["inference_overhead_gflops"] is None and out["feature_gflops"] is None


class Rebuilt(nn.Module):
    """A layer that rebuilds its weight W = A·B at every call, as several peft tuners do."""

    def __init__(self, d_in: int, rank: int, d_out: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(d_in, rank))
        self.b = nn.Parameter(torch.randn(rank, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ (self.a @ self.b)


def test_work_once_per_call_is_not_charged_to_one_image() -> None:
    d_in, rank, d_out = 3 * 8 * 8, 4, 5
    out = flops_per_image(Rebuilt(d_in, rank, d_out), img_size=8, device="cpu")
    assert out["inference_gflops"] * GIGA == pytest.approx(2 * d_in * d_out)
    assert out["inference_fixed_gflops"] * GIGA == pytest.approx(2 * d_in * rank * d_out)
    # backward: the gradient of W (per image: xᵀ·dy), then A's and B's from it (per step)
    assert out["train_gflops"] * GIGA == pytest.approx(2 * 2 * d_in * d_out)
    assert out["train_fixed_gflops"] * GIGA == pytest.approx(3 * 2 * d_in * rank * d_out)


def vit_forward_flops() -> int:
    patches = 2 * PATCH_IN * D * (N - 1)  # the patch convolution
    linears = 2 * N * (3 * D * D + D * D + 4 * D * D + 4 * D * D)  # qkv, proj, fc1, fc2
    attention = 2 * (2 * N * N * D)  # q·kᵀ and attn·v over all heads
    return patches + DEPTH * (linears + attention) + 2 * D * C


def test_linear_probe_on_a_tiny_vit_matches_the_hand_formula() -> None:
    out = count(adapted("linear"))
    assert out["inference_gflops"] * GIGA == pytest.approx(vit_forward_flops())
    assert out["backbone_gflops"] * GIGA == pytest.approx(vit_forward_flops())
    assert out["inference_overhead_gflops"] == 0.0
    # preload: the head trains on cached features; the backbone runs once per image
    assert out["train_counts"] == FROM_FEATURES
    assert out["train_gflops"] * GIGA == pytest.approx(2 * (2 * D * C))
    assert out["feature_gflops"] * GIGA == pytest.approx(vit_forward_flops() - 2 * D * C)
    # asked to count the step end to end (an augmenting cell), the frozen backbone runs too
    live = count(adapted("linear"), from_features=False)
    assert live["train_counts"] == WHOLE_MODEL and live["feature_gflops"] is None
    assert live["train_gflops"] * GIGA == pytest.approx(vit_forward_flops() + 2 * D * C)


def test_attention_counts_alike_on_cpu_and_meta() -> None:
    # CPU runs timm's attention as one fused kernel torch's counter has no formula for; meta
    # decomposes it into matmuls. Both must count it, alike.
    on_cpu = count(tiny_vit(C))
    assert on_cpu["inference_gflops"] == on_cpu["backbone_gflops"]
    assert on_cpu["inference_gflops"] * GIGA == pytest.approx(vit_forward_flops())


def test_from_features_needs_a_frozen_feature_model() -> None:
    with pytest.raises(ValueError, match="frozen-feature"):
        count(tiny_vit(C), from_features=True)


# ------------------------------------------------------------------ every registered method


@pytest.mark.parametrize("name", ALL)
def test_every_method_counts_and_is_left_unchanged(name: str) -> None:
    model = adapted(name)
    set_train_mode(model)  # as between training steps: frozen parts in eval mode
    modes = [m.training for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()

    out = count(model, name)

    trains = not training_free(model)  # k-NN: no training step, so nothing to count
    for key in ("inference_gflops", "train_gflops", "backbone_gflops"):
        if key == "train_gflops" and not trains:
            assert out[key] == 0.0
            continue
        assert 0 < out[key] < float("inf"), key
    for key in ("inference_fixed_gflops", "train_fixed_gflops"):
        assert 0 <= out[key] < float("inf"), key
    if trains:  # no trained method computes less than its backbone
        assert out["inference_overhead_gflops"] >= 0
    else:  # k-NN drops the head, and its similarity search needs the memory the count lacks
        assert out["inference_overhead_gflops"] == pytest.approx(0.0, abs=1e-5)
    if name in MERGING:  # merged, the adapted model is the backbone again, at its cost
        assert out["merged_inference_gflops"] == out["backbone_gflops"]
        assert out["inference_overhead_gflops"] == 0.0
    else:
        assert out["merged_inference_gflops"] is None
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_gradients_already_there_are_kept() -> None:
    model = adapted("lora")
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.ones_like(p)
    count(model, "lora")
    assert all(p.grad is not None and torch.equal(p.grad, torch.ones_like(p)) for p in trainable)


@pytest.mark.parametrize("name", MERGING)
def test_merged_model_computes_the_same(name: str) -> None:
    model = perturbed(adapted(name)).eval()
    merged = methods.get_method(name).merge(copy.deepcopy(model)).eval()
    torch.manual_seed(0)
    plain = tiny_vit(C).eval()  # the backbone `adapted` started from
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged(x), plain(x), atol=1e-4)  # the adaptation was merged
    assert {type(m) for m in merged.modules()} <= {type(m) for m in tiny_vit(C).modules()}


def test_lora_costs_extra_until_merged() -> None:
    out = count(adapted("lora"), "lora")
    rank = methods.get_method("lora").hparams["rank"]
    extra = DEPTH * 2 * N * (D * rank + rank * 3 * D)  # x·A then ·B on each block's qkv
    assert (out["inference_gflops"] - out["backbone_gflops"]) * GIGA == pytest.approx(extra)
    assert out["merged_inference_gflops"] == out["backbone_gflops"]
    assert out["inference_overhead_gflops"] == 0.0


def test_ssf_merge_folds_every_scale_shift() -> None:
    model = adapted("ssf", init_std=0.3).eval()  # far from identity, so a missed fold shows
    merged = methods.get_method("ssf").merge(copy.deepcopy(model)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, ScaleShift) for m in merged.modules())
    assert [n for n, _ in merged.named_modules()] == [n for n, _ in tiny_vit(C).named_modules()]


def test_methods_without_a_merge_keep_their_overhead() -> None:
    assert methods.get_method("vpt").merge is None
    out = count(adapted("vpt"), "vpt")
    assert out["merged_inference_gflops"] is None
    assert out["inference_gflops"] > out["backbone_gflops"]  # prompts lengthen the sequence
    assert out["inference_overhead_gflops"] == pytest.approx(
        out["inference_gflops"] - out["backbone_gflops"]
    )


# ------------------------------------------------------------------ batch-1 latency


def test_batch1_latency_is_positive_and_changes_nothing() -> None:
    model = adapted("vpt")
    set_train_mode(model)
    modes = [m.training for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    out = batch1_latency(model, img_size=SIZE, device="cpu", precision="fp32", repeats=5)
    assert out["repeats"] == 5 and out["warmup"] == 3
    assert 0 < out["median_ms"] <= out["p90_ms"] < float("inf")
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="repeats"):
        batch1_latency(model, img_size=SIZE, device="cpu", precision="fp32", repeats=0)
