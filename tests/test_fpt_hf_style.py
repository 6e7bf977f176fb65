"""FPT+/FPT's `hf_style` (methods/fpt.py): the LPM's position embedding resampled from the
checkpoint's grid as the reference's HF ViT does, LayerNorm eps 1e-12; off by default and then
bit-identical to the builds before the option; run ids, feature-cache keys and `bench list`."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from bench import backbones
from bench.backbones import create_backbone, resolve_backbone
from bench.config import CellConfig
from bench.measure import count_params
from methods import get_method
from methods.fpt import hf_resample_pos_embed
from tests.conftest import tiny_vit

VARIANTS = ("fpt-plus", "fpt-v1")


def known_pos_embed(grid: int = 24, dim: int = 8) -> torch.Tensor:
    """A smooth-plus-noise position embedding [1, 1 + grid², dim] with a distinct class row."""
    g = torch.Generator().manual_seed(0)
    axis = torch.arange(grid, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    waves = torch.stack([torch.sin((yy + 2 * xx) * (k + 1) / grid) for k in range(dim)], -1)
    patches = waves + 0.1 * torch.randn(grid, grid, dim, generator=g)
    return torch.cat([torch.full((1, 1, dim), 7.0), patches.reshape(1, grid * grid, dim)], 1)


def build(name: str, model: nn.Module, **hparams):
    return get_method(name).build(model, **{**get_method(name).hparams, **hparams})


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A test_vit checkpoint at its pretrained size (160 px: a 10x10 grid)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False, num_classes=0).state_dict(), path)
    return path


def pretrained_lpm(weights: Path, img_size: int = 224) -> nn.Module:
    torch.manual_seed(1)
    source = resolve_backbone("test_vit", pretrained=True, weights=weights)
    return create_backbone(source, num_classes=4, img_size=img_size)


# ---------------------------------------------------------------- the resampling itself
def test_hf_resampling_is_the_reference_interpolate_and_keeps_the_class_token() -> None:
    pos = known_pos_embed()
    out = hf_resample_pos_embed(pos, (32, 32))
    grid = pos[:, 1:].reshape(1, 24, 24, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(
        grid, scale_factor=(32.1 / 24, 32.1 / 24), mode="bicubic", align_corners=False
    )
    assert out.shape == (1, 1 + 32 * 32, 8)
    assert torch.equal(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 1024, 8))
    assert torch.equal(out[:, :1], pos[:, :1])
    # HF's early exit: a square grid already at the size is returned as it is
    assert hf_resample_pos_embed(pos, (24, 24)) is pos


def test_hf_resampling_differs_from_timms() -> None:
    pos = known_pos_embed()
    timm_way = resample_abs_pos_embed(pos, new_size=[32, 32], num_prefix_tokens=1)
    hf_way = hf_resample_pos_embed(pos, (32, 32))
    assert hf_way.shape == timm_way.shape
    assert torch.equal(hf_way[:, :1], timm_way[:, :1])
    assert (hf_way[:, 1:] - timm_way[:, 1:]).abs().max() > 1e-2


# ---------------------------------------------------------------- the checkpoint's grid
def test_create_backbone_keeps_the_checkpoints_grid_only_when_it_resamples(weights_file) -> None:
    saved = torch.load(weights_file, weights_only=True)["pos_embed"]
    model = pretrained_lpm(weights_file)
    assert model.pos_embed.shape[1] == 1 + 14 * 14
    assert torch.equal(model.pretrained_pos_embed, saved)
    assert "pretrained_pos_embed" not in model.state_dict()  # a plain attribute
    assert not hasattr(pretrained_lpm(weights_file, img_size=160), "pretrained_pos_embed")
    random = create_backbone(
        resolve_backbone("test_vit", pretrained=False, weights=None), num_classes=4, img_size=224
    )
    assert not hasattr(random, "pretrained_pos_embed")


def test_keeping_the_grid_leaves_the_build_bit_identical(weights_file, monkeypatch) -> None:
    """The build before the option existed: create_backbone without the capture."""
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    now = pretrained_lpm(weights_file)
    after_now = torch.randn(4)  # the global RNG after the build (a method's init draws next)
    monkeypatch.setattr(backbones, "_checkpoint_pos_embeds", lambda: contextlib.nullcontext([]))
    before = pretrained_lpm(weights_file)
    assert not hasattr(before, "pretrained_pos_embed")
    assert torch.equal(torch.randn(4), after_now)
    sd_now, sd_before = now.state_dict(), before.state_dict()
    assert sd_now.keys() == sd_before.keys()
    assert all(torch.equal(sd_now[k], sd_before[k]) for k in sd_now)
    with torch.no_grad():
        assert torch.equal(now.eval()(x), before.eval()(x))


@pytest.mark.parametrize("name", VARIANTS)
def test_hf_style_false_gives_the_logits_of_the_untouched_path(name, weights_file) -> None:
    """hf_style=False (or absent, as before the option) builds the same model bit for bit."""
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    outs = []
    for hparams in ({}, {"hf_style": False}):
        torch.manual_seed(5)
        hp = {k: v for k, v in get_method(name).hparams.items() if k != "hf_style"} | hparams
        adapted = get_method(name).build(pretrained_lpm(weights_file), **hp).eval()
        with torch.no_grad():
            outs.append(adapted(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", VARIANTS)
def test_hf_style_resamples_the_checkpoints_grid(name, weights_file) -> None:
    saved = torch.load(weights_file, weights_only=True)["pos_embed"]
    torch.manual_seed(5)
    off = build(name, pretrained_lpm(weights_file)).eval()
    torch.manual_seed(5)
    on = build(name, pretrained_lpm(weights_file), hf_style=True).eval()
    assert torch.equal(on.lpm.pos_embed, hf_resample_pos_embed(saved, (14, 14)))
    assert on.settings["hf_pos_embed_from"] == "checkpoint"
    assert not torch.equal(on.lpm.pos_embed, off.lpm.pos_embed)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = on(x), off(x)
    assert torch.isfinite(a).all() and not torch.equal(a, b)


# ---------------------------------------------------------------- LayerNorm eps
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("hf_style", [False, True])
def test_every_layernorm_of_lpm_and_side_has_the_styles_eps(name, hf_style) -> None:
    model = tiny_vit(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)
    adapted = build(name, model, hf_style=hf_style)
    norms = [m for part in (adapted.lpm, adapted.side) for m in part.modules()]
    norms = [m for m in norms if isinstance(m, nn.LayerNorm)]
    assert len(norms) >= 2 * 3 * 2  # two per block at least, in both networks
    assert {m.eps for m in norms} == {1e-12 if hf_style else 1e-6}


# ---------------------------------------------------------------- random weights
def test_random_weights_at_the_native_size_keep_their_embedding() -> None:
    model = tiny_vit(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    before = model.pos_embed.detach().clone()
    adapted = build("fpt-plus", model, hf_style=True)
    assert torch.equal(adapted.lpm.pos_embed, before)
    assert adapted.settings["hf_pos_embed_from"].startswith("model (its native grid")


def test_random_weights_elsewhere_stand_in_for_a_native_checkpoint() -> None:
    """No checkpoint: the model's own grid, resampled (timm) to the native 16 px / 8 = 2x2 grid,
    then HF-style to the 4x4 grid, as a checkpoint at the native size would have been."""
    model = tiny_vit(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 16, 16)}
    own = model.pos_embed.detach().clone()
    adapted = build("fpt-plus", model, hf_style=True)
    native = resample_abs_pos_embed(own, new_size=[2, 2], num_prefix_tokens=1)
    assert torch.equal(adapted.lpm.pos_embed, hf_resample_pos_embed(native, (4, 4)))
    assert adapted.settings["hf_pos_embed_from"].startswith("model, resampled to the native grid")


# ---------------------------------------------------------------- identities and counts
def _cell(**hparams) -> CellConfig:
    return CellConfig(
        method="fpt-plus", dataset="d", seed=0, backbone="test_vit", pretrained=False,
        weights=None, weights_sha256=None, epochs=1, batch_size=2, img_size=224, device="cpu",
        precision="fp32", optimizer="adamw", lr=1e-3, weight_decay=0.1, warmup_epochs=0.0,
        grad_clip=1.0, hparams=hparams,
    )  # fmt: skip


def test_run_id_leaves_out_hf_style_false_only() -> None:
    assert _cell(layers=6).run_id == _cell(layers=6, hf_style=False).run_id
    assert _cell(layers=6).run_id != _cell(layers=6, hf_style=True).run_id


@pytest.mark.parametrize("name", VARIANTS)
def test_feature_identity_names_hf_style_only_when_set(name) -> None:
    def identity(hf_style: bool) -> dict:
        model = tiny_vit(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)
        return build(name, model, hf_style=hf_style).feature_identity()

    off, on = identity(False), identity(True)
    assert "hf_style" not in off  # the key of caches built before the option
    assert on == {**off, "hf_style": True}


@pytest.mark.parametrize("name", VARIANTS)
def test_trainable_count_does_not_depend_on_hf_style(name) -> None:
    counts = set()
    for hf_style in (False, True):
        model = tiny_vit(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)
        counts.add(count_params(build(name, model, hf_style=hf_style), trainable_only=True))
    assert len(counts) == 1


def test_bench_list_shows_the_papers_percent_for_fpt_plus() -> None:
    from bench.method_counts import trainable_counts

    counts = trainable_counts(["fpt-plus", "linear"], backbone="test_vit", num_classes=3)
    assert re.fullmatch(r"[\d,]+ \([\d.]+ %; paper's formula [\d.]+ %\)", counts["fpt-plus"])
    assert re.fullmatch(r"[\d,]+ \([\d.]+ %\)", counts["linear"])
