"""LoRA and the other peft tuners (methods/peft_tuners.py, methods/peft_inject.py): counts, targeting, init."""

from __future__ import annotations

import copy
import re

import pytest
import timm
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

import methods
from bench.train import set_train_mode
from methods.peft_inject import LINEAR_TARGETS, target_regex
from tests.conftest import skip_if_unavailable, tiny_vit

PEFT_METHODS = (
    "lora",
    "dora",
    "loha",
    "lokr",
    "ia3",
    "vera",
    "fourierft",
    "boft",
    "oft",
    "hra",
    "ln_tuning",
    "randlora",
    "shira",
    "c3a",
    "road",
    "miss",
    "delora",
    "waveft",
)
# Tuners whose default init is a zero update (checked in peft 0.21.2's layer code): LoRA/DoRA/
# DeLoRA B = 0, LoHa/LoKr one factor 0, (IA)³ ones, VeRA b = 0, FourierFT/WaveFT zero spectrum,
# OFT/BOFT zero skew matrix (R = I, BOFT's s = 1), HRA cancelling pairs of reflections, LN-tuning
# an exact copy, RandLoRA Λ = 0, SHiRA/MiSS zero entries, RoAd θ = 0, α = 1.
IDENTITY_AT_INIT = tuple(m for m in PEFT_METHODS if m != "c3a")  # c3a: xavier-uniform kernel


def build(name: str, model: nn.Module, **hparams) -> nn.Module:
    skip_if_unavailable(name)  # a tuner newer than the installed peft
    spec = methods.get_method(name)
    return spec.build(model, **{**spec.hparams, **hparams})


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def wrapped(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


@pytest.fixture(scope="module")
def vit_b() -> nn.Module:
    """One frozen ViT-B/16 (7 classes) per module; each test adapts a deep copy (faster than timm init)."""
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    return model.requires_grad_(False)


def test_every_peft_method_is_registered() -> None:
    assert set(PEFT_METHODS) <= set(methods.list_methods(include_unavailable=True))


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        # 12 blocks x r·(768 + 2304) on the fused qkv, + 5,383 for the head.
        ({"rank": 4}, 152_839),
        ({}, 300_295),
        ({"rank": 16}, 595_207),
        # R1: + 12·r·(768 + 768) for the blocks' attn.proj (patch_embed.proj not wrapped).
        ({"targets": "qkv,proj"}, 447_751),
        # R2: + 12·r·((768 + 3072) + (3072 + 768)) for fc1 and fc2.
        ({"targets": "qkv,proj,fc1,fc2"}, 1_185_031),
        ({"targets": "all"}, 1_185_031),
        # R3: MLP only, 12·8·(3840 + 3840) + 5,383.
        ({"targets": "mlp"}, 742_663),
    ],
)
def test_lora_counts_vit_b16(vit_b: nn.Module, hparams: dict, expected: int) -> None:
    model = build("lora", copy.deepcopy(vit_b), **hparams)
    assert trainable_count(model) == expected
    assert isinstance(model.patch_embed.proj, nn.Conv2d)


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_patch_embedding_is_never_wrapped(vit_b: nn.Module, name: str) -> None:
    """Default counts are in tests/test_trainable_counts.py; here: the conv stays a conv."""
    model = build(name, copy.deepcopy(vit_b))
    assert isinstance(model.patch_embed.proj, nn.Conv2d)


@pytest.mark.parametrize(
    ("targets", "suffixes"),
    [
        ("qkv", ["attn.qkv"]),
        ("qkv,proj", ["attn.qkv", "attn.proj"]),
        ("attn", ["attn.qkv", "attn.proj"]),
        ("qkv,proj,fc1,fc2", ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]),
        ("mlp", ["mlp.fc1", "mlp.fc2"]),
        (" fc2 , qkv ", ["attn.qkv", "mlp.fc2"]),
    ],
)
def test_lora_wraps_exactly_the_blocks_linears(targets: str, suffixes: list[str]) -> None:
    model = build("lora", tiny_vit(depth=3), targets=targets)
    expected = {f"blocks.{i}.{s}" for i in range(3) for s in suffixes}
    assert wrapped(model) == expected
    assert isinstance(model.patch_embed.proj, nn.Conv2d)  # never a conv-LoRA


def test_target_regex_full_matches_block_modules_only() -> None:
    names = [
        n for n, _ in timm.create_model("vit_base_patch16_224", pretrained=False).named_modules()
    ]
    for targets in LINEAR_TARGETS:
        hits = [n for n in names if re.fullmatch(target_regex(targets), n)]
        assert hits and all(n.startswith("blocks.") for n in hits), targets
        assert "patch_embed.proj" not in hits
    # The spec's regexes select the same modules.
    for ours, spec in [
        ("qkv,proj", r"blocks\.\d+\.attn\.(qkv|proj)"),
        ("qkv,proj,fc1,fc2", r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc\d)"),
        ("mlp", r".*\.mlp\.fc\d"),
    ]:
        assert [n for n in names if re.fullmatch(target_regex(ours), n)] == [
            n for n in names if re.fullmatch(spec, n)
        ]


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_only_adapter_tensors_and_head_train(name: str) -> None:
    model = build(name, tiny_vit())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    adapter = trainable - {"head.weight", "head.bias"}
    assert adapter, f"{name}: no adapter tensor trains"
    # peft names adapter tensors <module>.<tuner>_<x>.default[...]; the wrapped originals are frozen.
    assert all(".default" in n for n in adapter), sorted(adapter)
    assert not any(".base_layer." in n for n in trainable)


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
def test_identity_at_init(name: str) -> None:
    torch.manual_seed(0)
    model = tiny_vit(embed_dim=64, num_heads=2).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        after = build(name, model).eval()(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_c3a_starts_close_to_but_not_at_the_backbone() -> None:
    torch.manual_seed(0)
    model = tiny_vit().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        after = build("c3a", model).eval()(x)
    assert not torch.equal(after, before)
    assert (after - before).abs().max() < 0.1 * before.abs().max()


def test_lora_computes_the_scaled_low_rank_update() -> None:
    # qkv = h·Wᵀ + b + (α/r)·(h·Aᵀ)·Bᵀ (LoRA, Hu et al. 2021), with B made non-zero.
    torch.manual_seed(0)
    model = build("lora", tiny_vit(), rank=4, alpha=12.0)
    layer = model.blocks[0].attn.qkv
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        b.normal_()
        h = torch.randn(2, 5, 32)
        base = layer.base_layer
        expected = h @ base.weight.T + base.bias + 3.0 * (h @ a.T) @ b.T
        torch.testing.assert_close(layer(h), expected)


def test_lora_dropout_runs_only_in_training() -> None:
    torch.manual_seed(0)
    model = build("lora", tiny_vit(), dropout=0.5)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.lora_B["default"].weight.normal_()
    x = torch.randn(2, 3, 32, 32)
    set_train_mode(model)
    assert not torch.equal(model(x), model(x))  # the adapter's dropout is live
    model.eval()
    assert torch.equal(model(x), model(x))


def test_vera_projections_are_shared_frozen_buffers() -> None:
    model = build("vera", tiny_vit())
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert len(layers) == 2
    assert layers[0].vera_A is layers[1].vera_A  # one BufferDict for all layers
    assert not any("vera_A" in n or "vera_B" in n for n, _ in model.named_parameters())


def test_ia3_scales_qkv_outputs_and_fc2_inputs() -> None:
    model = build("ia3", tiny_vit())
    scales = {n: p.shape for n, p in model.named_parameters() if "ia3_l" in n}
    assert scales["blocks.0.attn.qkv.ia3_l.default"] == (96, 1)  # output side (d_out = 3·32)
    assert scales["blocks.0.mlp.fc2.ia3_l.default"] == (1, 128)  # input side: the MLP hidden units


def test_c3a_auto_block_size_is_the_gcd() -> None:
    model = build("c3a", tiny_vit(), targets="qkv,fc1")  # 32 -> 96 and 32 -> 128: gcd 32
    kernel = model.blocks[0].attn.qkv.c3a_kernel["default"]
    assert kernel.shape == (3, 1, 32)


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("lora", {"rank": 0}, "rank"),
        ("lora", {"rank": 2.5}, "rank"),
        ("lora", {"alpha": -1.0}, "alpha"),
        ("lora", {"dropout": 1.0}, "dropout"),
        ("lora", {"targets": "qkv,q_proj"}, "q_proj.*qkv, proj, fc1, fc2, attn, mlp, all"),
        ("lora", {"targets": " , "}, "empty"),
        ("dora", {"targets": "head"}, "unknown name"),
        ("ia3", {"feedforward": "fc1"}, "feedforward"),
        ("ia3", {"feedforward": "fc3"}, "feedforward has unknown name"),
        ("road", {"group_size": 3}, "group_size must be an even integer >= 2"),
        ("ln_tuning", {"targets": "qkv"}, "norm1, norm2, norm"),
        ("shira", {"rank": 32}, "shira rank"),
        ("c3a", {"block_size": 24}, "does not divide"),
        ("hra", {"rank": 3}, "even"),
        ("road", {"variant": "road_3"}, "variant"),
        ("miss", {"rank": 64}, "in_features"),
        ("fourierft", {"n_frequency": 10**6}, "n_frequency"),
        ("lokr", {"decompose_factor": 0}, "decompose_factor"),
    ],
)
def test_bad_hyperparameters_raise_value_error(name: str, hparams: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(name, tiny_vit(), **hparams)


@pytest.mark.skipif(torch.cuda.is_available(), reason="peft may build its BOFT CUDA extension")
def test_boft_refuses_a_butterfly_factor_peft_did_not_build() -> None:
    with pytest.raises(ValueError, match="butterfly_factor"):
        build("boft", tiny_vit(), butterfly_factor=2)
