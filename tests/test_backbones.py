"""Backbones: local weight files load exactly; offline hub and bad files fail before training."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from bench.backbones import create_backbone, resolve_backbone
from bench.errors import UserError


@pytest.fixture(scope="module")
def saved_test_vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False)  # 1000-class head, 160 px


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_exactly(tmp_path, saved_test_vit, suffix) -> None:
    path = tmp_path / f"w{suffix}"
    state = saved_test_vit.state_dict()
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    source = resolve_backbone("test_vit", pretrained=True, weights=path)
    assert source.weights == path and len(source.weights_sha256) == 64
    model = create_backbone(source, num_classes=5)
    got = model.state_dict()
    for key, value in state.items():
        if key.startswith("head."):
            continue  # a fresh 5-class head replaces the 1000-class one
        assert torch.equal(got[key], value), key
    assert model.get_classifier().out_features == 5
    assert not any(p.requires_grad for p in model.parameters())


def test_local_weights_resampled_to_new_img_size(tmp_path, saved_test_vit) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in saved_test_vit.state_dict().items()}, str(path))
    model = create_backbone(
        resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2, img_size=32
    )
    assert model.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert torch.equal(model.blocks[0].attn.qkv.weight, saved_test_vit.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_of_another_architecture_fail_clearly(tmp_path, suffix) -> None:
    def saved(**kwargs):
        other = timm.create_model("vit_small_patch16_224", pretrained=False, **kwargs)
        state = {k: v.contiguous() for k, v in other.state_dict().items()}
        path = tmp_path / f"{len(kwargs)}{suffix}"
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        return path

    narrow = saved(embed_dim=48, depth=1, num_heads=2)  # test_vit is 64 wide
    with pytest.raises(UserError) as err:
        resolve_backbone("test_vit", pretrained=True, weights=narrow)
    assert str(err.value) == (
        f"cannot read weights file {narrow}: entry 'patch_embed.proj.weight' projects patches to "
        "width 48, but test_vit is 64 wide; pass weights of this architecture"
    )
    shallow = saved(embed_dim=64, depth=1, num_heads=2)  # the width fits; its depth does not
    with pytest.raises(UserError, match="cannot build backbone 'test_vit' from"):
        create_backbone(
            resolve_backbone("test_vit", pretrained=True, weights=shallow), num_classes=2
        )


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00\x01garbage"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_unreadable_weights_file(tmp_path, content, suffix) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(content)
    with pytest.raises(UserError, match="cannot read weights file"):
        resolve_backbone("test_vit", pretrained=True, weights=path)


def test_pickle_with_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state": object()}, path)  # not loadable with weights_only=True
    with pytest.raises(UserError, match="cannot read weights file"):
        resolve_backbone("test_vit", pretrained=True, weights=path)


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        resolve_backbone("test_vit", pretrained=True, weights=tmp_path / "nope.safetensors")


def test_offline_named_backbone_fails_fast_with_instructions(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"not cached.*--weights PATH.*--no-pretrained"):
        resolve_backbone("vit_base_patch16_224.orig_in21k", pretrained=True, weights=None)
    assert time.perf_counter() - start < 5


def test_unknown_backbone_suggests_names() -> None:
    with pytest.raises(UserError, match=r"unknown backbone.*vit_base_patch16_224"):
        resolve_backbone("vit_base_patch16_244", pretrained=False, weights=None)


def test_weights_with_no_pretrained_contradict(tmp_path) -> None:
    with pytest.raises(UserError, match="contradict"):
        resolve_backbone("test_vit", pretrained=False, weights=tmp_path / "w.pth")
