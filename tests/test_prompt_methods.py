"""Prompt methods: VPT (deep, shallow), VFPT and VP; exact counts and the computations they claim."""

from __future__ import annotations

import math

import pytest
import timm
import torch

import methods
from bench.train import set_train_mode
from methods.vfpt import FourierPrompts
from methods.vp import PadPrompter
from methods.vpt import PromptedViT, prompt_init_bound
from tests.conftest import tiny_vit


def vit_b16_trainable(name: str, **hparams) -> int:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    model.requires_grad_(False)
    adapted = methods.get_method(name).build(model, **hparams)
    return sum(p.numel() for p in adapted.parameters() if p.requires_grad)


# VPT and VFPT: prompts + 5,383 head; VP: 2*3*30*224 + 2*3*30*164 + 5,383.
@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        ("vpt", {"prompt_length": 10}, 97_543),
        ("vpt", {"prompt_length": 50}, 466_183),
        ("vpt", {"prompt_length": 100}, 926_983),
        ("vfpt", {"prompt_length": 10}, 97_543),
        ("vp", {"pad": 30}, 75_223),
    ],
)
def test_exact_trainable_counts_vit_b16(name: str, hparams: dict, expected: int) -> None:
    assert vit_b16_trainable(name, **hparams) == expected


def test_defaults() -> None:
    assert methods.get_method("vpt").hparams == {"prompt_length": 10, "dropout": 0.0}
    assert methods.get_method("vpt-shallow").hparams == {"prompt_length": 10, "dropout": 0.0}
    assert methods.get_method("vfpt").hparams["fourier_fraction"] == 0.5
    assert 2 * 3 * 30 * 224 + 2 * 3 * 30 * (224 - 60) + 768 * 7 + 7 == 75_223


def test_prompt_init_bound_follows_the_model() -> None:
    vit_b = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    assert prompt_init_bound(vit_b) == pytest.approx(0.0625)  # sqrt(6 / (3*16*16 + 768))
    small = tiny_vit(patch_size=8, embed_dim=48, num_heads=3)
    assert prompt_init_bound(small) == pytest.approx(math.sqrt(6 / (3 * 8 * 8 + 48)))
    torch.manual_seed(0)
    wrapped = methods.get_method("vpt").build(small, prompt_length=20)
    prompts = wrapped.prompt_embeddings
    bound = prompt_init_bound(small)
    assert prompts.shape == (2, 20, 48)
    assert prompts.abs().max() <= bound
    assert prompts.abs().max() > 0.9 * bound  # uniform over the whole range, not a tiny normal


def capture_blocks(model: PromptedViT) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    for block in model.vit.blocks:
        block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
        block.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach()))
    return inputs, outputs


def embedded_tokens(vit: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))


@pytest.mark.parametrize("name", ["vpt", "vfpt"])
def test_deep_prompts_overwrite_only_the_prompt_slots(name: str) -> None:
    torch.manual_seed(0)
    p = 4
    model = methods.get_method(name).build(tiny_vit(depth=3), prompt_length=p)
    set_train_mode(model)
    inputs, outputs = capture_blocks(model)
    x = torch.randn(2, 3, 32, 32)
    model(x)
    assert len(inputs) == 3
    tokens = embedded_tokens(model.vit, x)
    for i, seen in enumerate(inputs):
        assert seen.shape == (2, 1 + p + 4, 32)
        own = model.layer_prompts(i, 2).detach()
        assert torch.equal(seen[:, 1 : 1 + p], own), f"block {i} got other prompts"
        if i == 0:
            assert torch.equal(seen[:, :1], tokens[:, :1])
            assert torch.equal(seen[:, 1 + p :], tokens[:, 1:])
        else:
            # CLS and patches are exactly the previous block's output; the old prompts are gone.
            assert torch.equal(seen[:, :1], outputs[i - 1][:, :1])
            assert torch.equal(seen[:, 1 + p :], outputs[i - 1][:, 1 + p :])
            assert not torch.equal(seen[:, 1 : 1 + p], outputs[i - 1][:, 1 : 1 + p])
        if i > 0:
            assert not torch.equal(own, model.layer_prompts(i - 1, 2).detach())
    if name == "vpt":  # without a transform the slots hold the raw parameters
        for i, seen in enumerate(inputs):
            assert torch.equal(seen[0, 1 : 1 + p], model.prompt_embeddings[i].detach())


def test_shallow_prompts_are_carried_through() -> None:
    torch.manual_seed(0)
    p = 3
    model = methods.get_method("vpt-shallow").build(tiny_vit(depth=3), prompt_length=p)
    set_train_mode(model)
    inputs, outputs = capture_blocks(model)
    x = torch.randn(2, 3, 32, 32)
    model(x)
    assert model.prompt_embeddings.shape == (1, p, 32)
    assert torch.equal(inputs[0][:, 1 : 1 + p], model.prompt_embeddings[0].expand(2, -1, -1))
    for i in (1, 2):
        assert torch.equal(inputs[i], outputs[i - 1])  # nothing overwritten after the input


def test_prompts_get_no_position_embedding() -> None:
    torch.manual_seed(0)
    vit = tiny_vit()
    model = methods.get_method("vpt").build(vit, prompt_length=2)
    inputs, _ = capture_blocks(model)
    with torch.no_grad():
        vit.pos_embed.normal_()  # large position embeddings would show up on the prompts
        model(torch.randn(1, 3, 32, 32))
    assert torch.equal(inputs[0][0, 1:3], model.prompt_embeddings[0].detach())


@pytest.mark.parametrize("name", ["vpt", "vpt-shallow", "vfpt"])
def test_head_reads_cls_after_norm(name: str) -> None:
    torch.manual_seed(0)
    model = methods.get_method(name).build(tiny_vit(), prompt_length=3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    expected = model.vit.head(feats[:, 0])
    assert torch.allclose(model(x), expected, atol=1e-6)
    # The prompts change the CLS feature (they take part in attention), so the output
    # differs from the plain frozen ViT.
    assert not torch.allclose(model(x), model.vit(x), atol=1e-4)


def test_avg_pooling_ignores_prompt_outputs() -> None:
    torch.manual_seed(0)
    vit = tiny_vit(global_pool="avg", class_token=False, fc_norm=False)
    model = methods.get_method("vpt").build(vit, prompt_length=3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape[1] == 3 + 4  # no CLS: prompts at the front
    expected = model.vit.head(feats[:, 3:].mean(dim=1))
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["vpt", "vpt-shallow", "vfpt"])
def test_prompts_follow_register_tokens(name: str) -> None:
    torch.manual_seed(0)
    vit = tiny_vit(reg_tokens=2)
    model = methods.get_method(name).build(vit, prompt_length=3)
    inputs, _ = capture_blocks(model)
    x = torch.randn(2, 3, 32, 32)
    model(x)
    tokens = embedded_tokens(vit, x)
    assert inputs[0].shape[1] == 3 + 3 + 4
    assert torch.equal(inputs[0][:, :3], tokens[:, :3])  # CLS + 2 registers first
    assert torch.equal(inputs[0][:, 3:6], model.layer_prompts(0, 2).detach())


@pytest.mark.parametrize("name", ["vpt", "vpt-shallow", "vfpt"])
def test_frozen_backbone_in_eval_mode_during_training(name: str) -> None:
    vit = tiny_vit(proj_drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.5)
    model = methods.get_method(name).build(vit, prompt_length=2)
    set_train_mode(model)
    assert model.training
    for part in (vit.patch_embed, vit.blocks, vit.norm):
        assert all(not m.training for m in part.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))  # no dropout or drop-path in the frozen blocks
    model.train()  # the control: in train mode the same blocks are stochastic
    assert not torch.equal(model(x), model(x))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "prompt_embeddings",
        "vit.head.weight",
        "vit.head.bias",
    }


def test_prompt_dropout_is_applied_in_training_only() -> None:
    torch.manual_seed(0)
    model = methods.get_method("vpt").build(tiny_vit(), prompt_length=8, dropout=0.5)
    set_train_mode(model)
    assert model.prompt_dropout.training
    dropped = model.layer_prompts(1, 4)
    assert (dropped == 0).any() and not torch.equal(dropped[0], dropped[1])  # per-sample masks
    model.eval()
    assert torch.equal(model.layer_prompts(1, 4)[0], model.prompt_embeddings[1])


@pytest.mark.parametrize("img_size", [48, 64])
@pytest.mark.parametrize("name", ["vpt", "vpt-shallow", "vfpt"])
def test_other_image_sizes(name: str, img_size: int) -> None:
    torch.manual_seed(0)
    p = 5
    model = methods.get_method(name).build(tiny_vit(img_size=img_size), prompt_length=p)
    inputs, _ = capture_blocks(model)
    out = model(torch.randn(2, 3, img_size, img_size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert inputs[-1].shape[1] == 1 + p + (img_size // 16) ** 2


@pytest.mark.parametrize(
    ("hparams", "match"),
    [
        ({"prompt_length": 0}, "prompt_length"),
        ({"prompt_length": -3}, "prompt_length"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
@pytest.mark.parametrize("name", ["vpt", "vpt-shallow", "vfpt"])
def test_bad_prompt_hyperparameters(name: str, hparams: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        methods.get_method(name).build(tiny_vit(), **hparams)


# ----------------------------------------------------------------------------- VFPT


def test_fourier_transform_hand_checked() -> None:
    # k = 2 prompts of width 2: the 2x2 DFT of [[a, b], [c, d]] is
    # [[a+b+c+d, a-b+c-d], [a+b-c-d, a-b-c+d]] (all real).
    prompts = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [7.0, 9.0]]])
    out = FourierPrompts(2)(prompts)
    expected = torch.tensor([[[10.0, -2.0], [-4.0, 0.0], [7.0, 9.0]]])
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out[:, :2], torch.fft.fft2(prompts[:, :2]).real, atol=1e-5)


def test_fourier_transform_matches_fft2_real_part() -> None:
    torch.manual_seed(0)
    prompts = torch.randn(3, 10, 16)
    out = FourierPrompts(5)(prompts)
    assert torch.allclose(out[:, :5], torch.fft.fft2(prompts[:, :5]).real, atol=1e-4)
    assert torch.equal(out[:, 5:], prompts[:, 5:])
    # It is a real transform of the first five prompts only, not of all ten.
    assert not torch.allclose(out[:, :5], torch.fft.fft2(prompts).real[:, :5], atol=1e-3)


@pytest.mark.parametrize(("fraction", "k"), [(0.5, 5), (0.25, 2), (1.0, 10), (0.0, 0)])
def test_fourier_prompt_count_is_floor(fraction: float, k: int) -> None:
    model = methods.get_method("vfpt").build(
        tiny_vit(), prompt_length=10, fourier_fraction=fraction
    )
    assert model.transform.num_fourier == k
    prompts = model.layer_prompts(1, 1)[0].detach()
    raw = model.prompt_embeddings[1].detach()
    assert torch.equal(prompts[k:], raw[k:])
    if k:
        assert not torch.allclose(prompts[:k], raw[:k])


def test_vfpt_with_alpha_zero_equals_vpt_deep() -> None:
    torch.manual_seed(0)
    vit = tiny_vit(depth=3)
    deep = methods.get_method("vpt").build(vit, prompt_length=4)
    fourier = methods.get_method("vfpt").build(vit, prompt_length=4, fourier_fraction=0.0)
    half = methods.get_method("vfpt").build(vit, prompt_length=4, fourier_fraction=0.5)
    with torch.no_grad():
        fourier.prompt_embeddings.copy_(deep.prompt_embeddings)
        half.prompt_embeddings.copy_(deep.prompt_embeddings)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fourier(x), deep(x))
    assert not torch.allclose(half(x), deep(x), atol=1e-4)


def test_bad_fourier_fraction() -> None:
    with pytest.raises(ValueError, match="fourier_fraction"):
        methods.get_method("vfpt").build(tiny_vit(), fourier_fraction=1.5)


# ----------------------------------------------------------------------------- VP


def test_vp_frame_is_added_around_an_untouched_interior() -> None:
    torch.manual_seed(0)
    model = methods.get_method("vp").build(tiny_vit(img_size=48), pad=5, init_std=1.0)
    prompter = model.prompter
    x = torch.randn(2, 3, 48, 48)
    framed = prompter(x)
    assert torch.equal(framed[..., 5:43, 5:43], x[..., 5:43, 5:43])
    # The frame is exactly input + the learnable strips.
    assert torch.equal(framed[..., :5, :], x[..., :5, :] + prompter.pad_up)
    assert torch.equal(framed[..., 43:, :], x[..., 43:, :] + prompter.pad_down)
    assert torch.equal(framed[..., 5:43, :5], x[..., 5:43, :5] + prompter.pad_left)
    assert torch.equal(framed[..., 5:43, 43:], x[..., 5:43, 43:] + prompter.pad_right)
    assert not torch.equal(framed[..., :5, :], x[..., :5, :])


def test_vp_trains_the_frame_and_the_head() -> None:
    torch.manual_seed(0)
    model = methods.get_method("vp").build(tiny_vit(img_size=48), pad=5, init_std=1.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "prompter.pad_up",
        "prompter.pad_down",
        "prompter.pad_left",
        "prompter.pad_right",
        "vit.head.weight",
        "vit.head.bias",
    }
    x = torch.randn(2, 3, 48, 48, requires_grad=True)
    model(x).sum().backward()
    # Gradient reaches the frame; the model sees the framed image.
    assert model.prompter.pad_up.grad.abs().sum() > 0
    assert torch.equal(model(x), model.vit(model.prompter(x)))
    assert not torch.equal(model(x), model.vit(x))


@pytest.mark.parametrize(("img_size", "pad"), [(224, 30), (64, 9), (32, 4), (48, 6)])
def test_vp_default_pad_scales_with_image_size(img_size: int, pad: int) -> None:
    model = methods.get_method("vp").build(tiny_vit(img_size=img_size))
    assert model.prompter.pad == pad
    assert model.prompter.pad_up.shape == (1, 3, pad, img_size)
    assert model.prompter.pad_left.shape == (1, 3, img_size - 2 * pad, pad)


@pytest.mark.parametrize("pad", [16, 17, 100, -1])
def test_vp_rejects_bad_pad(pad: int) -> None:
    with pytest.raises(ValueError, match="pad"):
        methods.get_method("vp").build(tiny_vit(), pad=pad)


def test_vp_rejects_negative_init_std() -> None:
    with pytest.raises(ValueError, match="init_std"):
        methods.get_method("vp").build(tiny_vit(), init_std=-1.0)


def test_vp_largest_pad_is_accepted() -> None:
    model = methods.get_method("vp").build(tiny_vit(), pad=15)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_vp_rejects_wrong_input_size() -> None:
    model = methods.get_method("vp").build(tiny_vit(), pad=4)
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 48, 48))


def test_vp_default_starts_from_the_plain_image() -> None:
    assert methods.get_method("vp").hparams == {"pad": 0, "init_std": 0.0}
    model = methods.get_method("vp").build(tiny_vit())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.prompter(x), x)
    assert torch.equal(model(x), model.vit(x))
    # ... and the frame still receives a gradient from the zero start.
    model(x).sum().backward()
    assert model.prompter.pad_left.grad.abs().sum() > 0


def test_vp_init_std_scales_the_frame() -> None:
    torch.manual_seed(0)
    frame = PadPrompter(64, 64, 8, init_std=2.0).frame()
    strips = torch.cat((frame[..., :8, :].flatten(), frame[..., 8:56, :8].flatten()))
    assert 1.8 < strips.std() < 2.2
    assert torch.equal(frame[..., 8:56, 8:56], torch.zeros(1, 3, 48, 48))
