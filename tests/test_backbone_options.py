"""--backbone names judged without importing timm: the names read from timm's source files are
exactly the ones timm registers, so the early check refuses no model timm has."""

from __future__ import annotations

import pytest
import timm

from bench import backbone_options
from bench.backbone_options import check_backbone_name, timm_source_names
from bench.backbones import resolve_backbone
from bench.errors import UserError


def test_the_source_scan_finds_every_model_timm_registers() -> None:
    names = timm_source_names()
    assert names is not None, "the scan no longer understands timm's layout"
    registered, deprecated = names
    assert registered == set(timm.list_models())
    assert all(timm.is_model(name) for name in deprecated)


@pytest.mark.parametrize(
    "name",
    ["vit_base_patch16_224", "vit_base_patch16_224.augreg_in21k", "test_vit", "demo-vit",
     "hf-hub:MahmoodLab/UNI"],
)  # fmt: skip
def test_real_names_pass(name: str) -> None:
    check_backbone_name(name)


def test_a_typo_is_refused_with_timms_suggestions() -> None:
    with pytest.raises(UserError) as early:
        check_backbone_name("vit_base_patch16_244")
    assert "Similar timm models: vit_base_patch16_224" in str(early.value)
    with pytest.raises(UserError) as full:
        resolve_backbone("vit_base_patch16_244", pretrained=False, weights=None)
    assert str(full.value) == str(early.value)


def test_a_timm_the_scan_cannot_read_is_left_to_timm(monkeypatch) -> None:
    monkeypatch.setattr(backbone_options, "timm_source_names", lambda: None)
    check_backbone_name("nope_vit")  # not judged early
    with pytest.raises(UserError, match="unknown backbone 'nope_vit'"):
        resolve_backbone("nope_vit", pretrained=False, weights=None)


def test_an_unknown_pretrained_tag_lists_the_architectures_tags() -> None:
    with pytest.raises(UserError) as exc:
        resolve_backbone("vit_base_patch16_224.nosuchtag", pretrained=False, weights=None)
    message = str(exc.value)
    assert message.startswith("backbone 'vit_base_patch16_224.nosuchtag': Invalid pretrained tag")
    assert "vit_base_patch16_224.augreg_in21k" in message and "\n" not in message
