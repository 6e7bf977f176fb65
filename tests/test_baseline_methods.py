"""Baselines (partial, mlp-head, bitfit, adapter, ssf): exact ViT-B/16 counts and what each trains."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import methods
from bench.train import set_train_mode
from tests.conftest import tiny_vit

SEQUENTIAL_VPT = {"style": "sequential", "bottleneck": 96, "scale": 1.0, "dropout": 0.0}


def build(name: str, model: nn.Module | None = None, **hparams) -> nn.Module:
    torch.manual_seed(0)
    spec = methods.get_method(name)
    return spec.build(tiny_vit(3) if model is None else model, **{**spec.hparams, **hparams})


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        ("adapter", SEQUENTIAL_VPT, 1_785_223),  # VPT's Pfeiffer adapter, reduction 8
    ],
)
def test_exact_trainable_counts_vit_b16(name: str, hparams: dict, expected: int) -> None:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    model.requires_grad_(False)
    model = build(name, model, **hparams)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("k", [1, 2])
def test_partial_trains_last_blocks_final_norm_and_head(k: int) -> None:
    model = build("partial", blocks=k)
    depth = len(model.blocks)
    tuned = (*(f"blocks.{i}." for i in range(depth - k, depth)), "norm.", "head.")
    expected = {n for n, _ in model.named_parameters() if n.startswith(tuned)}
    assert trainable_names(model) == expected


@pytest.mark.parametrize("k", [0, 3])
def test_partial_rejects_bad_block_count(k: int) -> None:
    with pytest.raises(ValueError, match="blocks"):
        build("partial", blocks=k)  # the tiny ViT has 2 blocks


def test_bitfit_trains_every_bias_and_the_head_only() -> None:
    model = build("bitfit")
    names = trainable_names(model)
    assert all(n.endswith("bias") or n.startswith("head.") for n in names)
    assert {n for n, _ in model.named_parameters() if n.endswith("bias")} <= names
    assert {"patch_embed.proj.bias", "blocks.0.norm1.bias", "norm.bias", "head.weight"} <= names


@pytest.mark.parametrize("layers", [1, 3])
def test_mlp_head_has_k_linear_layers_and_a_frozen_backbone(layers: int) -> None:
    model = build("mlp-head", layers=layers)
    head = model.get_classifier()
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == model.embed_dim
    assert all(m.out_features == model.embed_dim for m in linears[:-1])  # hidden=0: embed dim
    assert linears[-1].out_features == 3
    assert trainable_names(model) == {f"head.{n}" for n, _ in head.named_parameters()}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("mlp-head", {"layers": 0}),
        ("mlp-head", {"norm": "groupnorm"}),
        ("adapter", {"style": "serial"}),
        ("adapter", {"bottleneck": 0}),
        ("ssf", {"init_std": -1.0}),
    ],
)
def test_bad_hyperparameters_raise_value_error(name: str, hparams: dict) -> None:
    with pytest.raises(ValueError):
        build(name, **hparams)


@pytest.mark.parametrize("hparams", [{}, SEQUENTIAL_VPT])
def test_adapter_is_the_identity_at_init(hparams: dict) -> None:
    backbone = tiny_vit(3)
    model = build("adapter", copy.deepcopy(backbone), **hparams)
    set_train_mode(model)  # step 0 of training: adapter dropout active, still an exact no-op
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), backbone.eval()(x))


@pytest.mark.parametrize("style", ["parallel", "sequential"])
def test_adapter_block_equation(style: str) -> None:
    backbone = tiny_vit(3)
    model = build("adapter", copy.deepcopy(backbone), style=style)
    block, ref = model.blocks[0], backbone.blocks[0]
    adapter = block.mlp.adapter
    with torch.no_grad():  # make the adapter non-trivial
        for p in adapter.parameters():
            p.normal_()
    model.eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        h = x + ref.attn(ref.norm1(x))  # the residual stream after attention, no LN
        mlp = ref.mlp(ref.norm2(h))
        src = h if style == "parallel" else mlp  # parallel reads h, sequential the MLP output
        act = torch.relu if style == "parallel" else nn.functional.gelu
        delta = 0.1 * (act(src @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T)
        delta = delta + 0.1 * adapter.up.bias
        torch.testing.assert_close(block(x), h + mlp + delta)


def test_ssf_wraps_every_op_and_is_not_the_identity_at_init() -> None:
    backbone = tiny_vit(3)
    model = build("ssf", copy.deepcopy(backbone))
    scale_shifts = [m for m in model.modules() if type(m).__name__ == "ScaleShift"]
    assert len(scale_shifts) == 6 * len(model.blocks) + 2  # per block 6, patch-embed, final norm
    assert all(
        n.startswith("head.") or ".1.gamma" in n or ".1.beta" in n for n in trainable_names(model)
    )
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        # Unlike the adapter, SSF starts from random gamma ~ N(1, .02^2), beta ~ N(0, .02^2)
        # (dongzelian/SSF's init), so its logits already differ from the frozen backbone's.
        assert not torch.allclose(model(x), backbone.eval()(x))
