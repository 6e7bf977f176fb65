"""EPT (methods/ept.py): counts, the spec's equations, fused == explicit, token-count handling."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import methods
from bench.train import set_train_mode
from methods.ept import EPTAttention
from tests.conftest import tiny_vit

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def build_ept(model: torch.nn.Module, **hparams) -> torch.nn.Module:
    spec = methods.get_method("ept")
    return spec.build(model, **{**spec.hparams, **hparams})


def ept_layers(model: torch.nn.Module) -> list[EPTAttention]:
    return [m for m in model.modules() if isinstance(m, EPTAttention)]


def set_fused(model: torch.nn.Module, fused: bool) -> None:
    for layer in ept_layers(model):
        layer.fused = fused


def trainable_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        ({}, 241_783),  # deep, d_p = 100: 12 x 197 x 100 + 5,383
        ({"prompt_length": 10}, 29_023),
        ({"prompt_length": 50}, 123_583),
        ({"prompt_length": 200}, 478_183),
        ({"deep": False}, 25_083),  # shallow, d_p = 100: 197 x 100 + 5,383
    ],
)
def test_exact_trainable_counts_vit_b16(hparams: dict, expected: int) -> None:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    model.requires_grad_(False)
    model = build_ept(model, **hparams)
    assert trainable_count(model) == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"} | {
        f"blocks.{i}.attn.prompt" for i in range(12 if hparams.get("deep", True) else 1)
    }


def test_shallow_wraps_only_the_first_block() -> None:
    model = build_ept(tiny_vit(), deep=False)
    assert isinstance(model.blocks[0].attn, EPTAttention)
    assert not isinstance(model.blocks[1].attn, EPTAttention)


def reference_attention(
    attn: torch.nn.Module, prompt: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """EPT's attention written out head by head from the block's weights, independent of ept.py."""
    B, N, C = x.shape
    H = attn.num_heads
    d = C // H
    d_p = prompt.shape[1]
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias  # channels ordered (q|k|v, head, dim)
    heads = []
    for h in range(H):
        q = qkv[..., 0 * C + h * d : 0 * C + (h + 1) * d]
        k = qkv[..., 1 * C + h * d : 1 * C + (h + 1) * d]
        v = qkv[..., 2 * C + h * d : 2 * C + (h + 1) * d]
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # [B, N, N]
        widened = torch.cat([prompt.expand(B, N, d_p), scores], dim=-1)  # prompts in front
        weights = torch.softmax(widened, dim=-1)[..., d_p:]  # drop the prompt columns
        heads.append(weights @ v)
    return torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("fused", [False, True])
def test_matches_independent_reference(fused: bool) -> None:
    torch.manual_seed(0)
    model = build_ept(tiny_vit(), prompt_length=7, init_std=1.0, fused=fused).eval()
    layer = model.blocks[0].attn
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        got = layer(x)
        want = reference_attention(layer.attn, layer.prompt, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("device", "dtype", "tol"),
    [
        ("cpu", torch.float64, 1e-10),
        ("cpu", torch.float32, 1e-5),
        pytest.param("cuda", torch.float32, 1e-4, marks=CUDA),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_fused_equals_explicit_outputs_and_gradients(
    device: str, dtype: torch.dtype, tol: float, train: bool
) -> None:
    torch.manual_seed(0)
    model = build_ept(tiny_vit(), prompt_length=13, init_std=0.5).to(device, dtype)
    # The harness's train mode: frozen attention (hence its dropout) stays in eval mode.
    set_train_mode(model) if train else model.eval()
    x = torch.randn(4, 3, 32, 32, device=device, dtype=dtype)
    target = torch.tensor([0, 1, 2, 0], device=device)
    results = []
    for fused in (False, True):
        set_fused(model, fused)
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        logits = model(xi)
        F.cross_entropy(logits, target).backward()
        grads = [layer.prompt.grad.clone() for layer in ept_layers(model)]
        results.append((logits.detach(), xi.grad, grads, model.head.weight.grad.clone()))
    (lo_e, gx_e, gp_e, gh_e), (lo_f, gx_f, gp_f, gh_f) = results
    torch.testing.assert_close(lo_f, lo_e, atol=tol, rtol=tol)
    torch.testing.assert_close(gx_f, gx_e, atol=tol, rtol=tol)
    torch.testing.assert_close(gh_f, gh_e, atol=tol, rtol=tol)
    for f, e in zip(gp_f, gp_e, strict=True):
        assert e.abs().max() > 0
        torch.testing.assert_close(f, e, atol=tol, rtol=tol)


def test_attention_dropout_same_distribution_in_both_paths() -> None:
    # With p > 0 the paths draw different masks; the spec's explicit path drops out prompt
    # columns too, the fused one the null column, and neither carries a value. Check that the
    # output distributions agree: the same mean (the no-dropout output) and the same variance.
    torch.manual_seed(0)
    model = build_ept(tiny_vit(attn_drop_rate=0.5), prompt_length=5, init_std=1.0)
    layer = model.blocks[0].attn
    x = torch.randn(1, 5, 32).expand(4000, 5, 32)
    with torch.no_grad():
        layer.eval()
        clean = layer(x[:1])[0]
        layer.train()
        assert layer.attn.attn_drop.training
        stats = []
        for fused in (False, True):
            layer.fused = fused
            out = layer(x)
            assert not torch.allclose(out[0], out[1])  # dropout is active
            stats.append((out.mean(0), out.var(0)))
    scale = clean.abs().max()
    for mean, _ in stats:
        torch.testing.assert_close(mean, clean, atol=0.05 * scale, rtol=0)
    (_, var_e), (_, var_f) = stats
    torch.testing.assert_close(var_f, var_e, atol=0.05 * var_e.max(), rtol=0.1)


def test_sequence_length_unchanged_through_blocks() -> None:
    model = build_ept(tiny_vit()).eval()
    shapes = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape)))
    model(torch.randn(2, 3, 32, 32))
    assert shapes == [(torch.Size([2, 5, 32]), torch.Size([2, 5, 32]))] * 2


def test_prompts_sized_to_the_real_token_count_tiny() -> None:
    # img 48 / patch 16: 9 patches + CLS = 10 tokens; the reference hard-codes 197 rows.
    model = build_ept(tiny_vit(img_size=48), prompt_length=4)
    assert [tuple(m.prompt.shape) for m in ept_layers(model)] == [(10, 4)] * 2
    set_train_mode(model)
    out = model(torch.randn(2, 3, 48, 48))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_prompts_sized_to_the_real_token_count_vit_b_384() -> None:
    # The shipped EPT configs crash here (197-row prompts, 577 tokens); a bug of the reference code.
    model = timm.create_model("vit_base_patch16_384", pretrained=False, num_classes=7)
    model.requires_grad_(False)
    model = build_ept(model)
    assert [tuple(m.prompt.shape) for m in ept_layers(model)] == [(577, 100)] * 12
    assert trainable_count(model) == 12 * 577 * 100 + 5_383
    del model.blocks[2:]  # two full-width blocks are enough to run 577 tokens through
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 384, 384))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_mismatched_token_count_raises_a_clear_error() -> None:
    model = build_ept(tiny_vit(dynamic_img_size=True)).eval()
    model(torch.randn(1, 3, 32, 32))  # the size it was built for works
    with pytest.raises(ValueError, match=r"built for 5 tokens \(img size \(32, 32\)\).* got 10"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="built for 5 tokens"):
        model.blocks[0].attn(torch.randn(1, 7, 32))


@pytest.mark.parametrize("fused", [False, True])
def test_minus_infinity_prompts_give_the_frozen_backbone(fused: bool) -> None:
    torch.manual_seed(0)
    base = tiny_vit().eval()
    model = build_ept(copy.deepcopy(base), fused=fused).eval()
    for layer in ept_layers(model):
        layer.prompt.data.fill_(-1e4)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=1e-6, rtol=1e-5)


def test_default_init_damps_attention() -> None:
    # d_p = 100, std 0.02: s ~ log(100), so every attention output is scaled down (EPT's scaling).
    torch.manual_seed(0)
    base = tiny_vit().eval()
    model = build_ept(copy.deepcopy(base)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - base(x)).abs().max() > 1e-3
        layer, plain = model.blocks[0].attn, base.blocks[0].attn
        h = base.blocks[0].norm1(base._pos_embed(base.patch_embed(x)))
        prompted, frozen = layer(h), plain(h)
        # The same attention output minus the proj bias, damped by a factor in (0, 1): with 5
        # keys of near-equal logits (random weights) against e^s ~ 100, about 5 / 105 is kept.
        ratio = (prompted - plain.proj.bias).norm() / (frozen - plain.proj.bias).norm()
    assert 0.02 < ratio < 0.1


@pytest.mark.parametrize(
    ("hparams", "match"),
    [
        ({"prompt_length": 0}, "prompt_length"),
        ({"prompt_length": -3}, "prompt_length"),
        ({"init_std": -0.1}, "init_std"),
        ({"init_std": float("nan")}, "init_std"),
    ],
)
def test_bad_hyperparameters_raise_value_error(hparams: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_ept(tiny_vit(), **hparams)


def test_non_timm_attention_is_rejected() -> None:
    model = tiny_vit()
    model.blocks[1].attn = torch.nn.Identity()
    with pytest.raises(ValueError, match="block 1 has Identity"):
        build_ept(model)


@pytest.mark.skipif(
    "attn_mask"
    not in inspect.signature(timm.models.vision_transformer.Attention.forward).parameters,
    reason=f"timm {timm.__version__}'s attention takes no masks to compare with",
)
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", ["bool", "float", "causal"])
def test_attention_masks_follow_timm(fused: bool, kind: str) -> None:
    # With P -> -inf the wrapper must reproduce timm's own attention for every mask form.
    torch.manual_seed(0)
    model = build_ept(tiny_vit(), fused=fused).eval()
    layer = model.blocks[0].attn
    layer.prompt.data.fill_(-1e4)
    x = torch.randn(2, 5, 32)
    kwargs: dict = {}
    if kind == "bool":
        mask = torch.rand(2, 1, 5, 5) > 0.4
        mask[..., 0] = True  # every query keeps a key
        kwargs["attn_mask"] = mask
    elif kind == "float":
        kwargs["attn_mask"] = torch.randn(2, 2, 5, 5)
    else:
        kwargs["is_causal"] = True
    with torch.no_grad():
        torch.testing.assert_close(layer(x, **kwargs), layer.attn(x, **kwargs), atol=1e-6, rtol=0)
