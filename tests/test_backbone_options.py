"""--backbone names judged without importing timm: the names read from timm's source files are
exactly the ones timm registers, and the pretrained tags found there include every one timm
lists, so the early check refuses no model or tag timm has."""

from __future__ import annotations

import pytest
import timm

from bench import backbone_geometry, backbone_options
from bench.backbone_geometry import cell_geometry, model_geometry, named_geometry
from bench.backbone_options import check_backbone_name, timm_source_names
from bench.backbones import resolve_backbone
from bench.errors import UserError


def test_the_source_scan_finds_every_model_timm_registers() -> None:
    names = timm_source_names()
    assert names is not None, "the scan no longer understands timm's layout"
    assert names.registered == set(timm.list_models())
    assert all(timm.is_model(name) for name in names.deprecated)


def test_every_pretrained_tag_timm_lists_passes(monkeypatch) -> None:
    monkeypatch.setattr(backbone_options, "not_vit_modules", frozenset)  # CNNs' tags too
    listed = timm.list_pretrained()
    assert len(listed) > 1000
    for name in listed:
        check_backbone_name(name)


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


def test_an_unknown_pretrained_tag_lists_the_architectures_tags(monkeypatch) -> None:
    name = "vit_base_patch16_224.nosuchtag"
    with pytest.raises(UserError) as early:
        check_backbone_name(name)
    monkeypatch.setattr(backbone_options, "timm_source_names", lambda: None)  # timm's own answer
    with pytest.raises(UserError) as full:
        resolve_backbone(name, pretrained=False, weights=None)
    for exc in (early, full):
        message = str(exc.value)
        assert message.startswith(
            "backbone 'vit_base_patch16_224.nosuchtag': vit_base_patch16_224 has no pretrained "
            "tag 'nosuchtag'; its tags: "
        )
        assert "vit_base_patch16_224.augreg_in21k" in message and "\n" not in message


def _not_vit_written_for_this_timm() -> bool:
    return bool(backbone_options.not_vit_modules())


@pytest.mark.parametrize("name", ["resnet50", "resnet50.a1_in1k", "convnext_tiny"])
def test_a_cnn_is_refused_early_as_the_full_check_refuses_it(name: str, monkeypatch) -> None:
    if not _not_vit_written_for_this_timm():
        pytest.skip("timm_layouts.json was written for another timm version")
    with pytest.raises(UserError) as early:
        check_backbone_name(name)
    monkeypatch.setattr(backbone_options, "not_vit_modules", frozenset)  # the full check alone
    with pytest.raises(UserError) as full:
        resolve_backbone(name, pretrained=False, weights=None)
    assert str(early.value) == str(full.value)
    assert "is not a timm VisionTransformer-like model" in str(full.value)


@pytest.mark.parametrize(
    "name", ["deit_small_patch16_224", "eva02_tiny_patch14_224", "beit_base_patch16_224", "cait_xxs24_224"]
)  # fmt: skip
def test_vit_families_pass_the_early_check(name: str) -> None:
    check_backbone_name(name)


def test_each_listed_timm_module_builds_no_vit() -> None:
    # one architecture per module (every one: `python -m bench.timm_layouts`, a few minutes)
    import torch

    from bench.backbones import vit_like

    listed = backbone_options.not_vit_modules()
    if not listed:
        pytest.skip("timm_layouts.json was written for another timm version")
    names = timm_source_names()
    first = {}
    for arch, module in sorted(names.modules.items()):
        first.setdefault(module, arch)
    assert listed <= set(first), "a listed module registers nothing in this timm"
    for module in sorted(listed):
        with torch.device("meta"):
            assert not vit_like(timm.create_model(first[module], pretrained=False)), module
    assert "vision_transformer" not in listed and "deit" not in listed


def test_another_timm_version_refuses_nothing_early(tmp_path, monkeypatch) -> None:
    other = tmp_path / "timm_layouts.json"
    other.write_text(
        '{"timm": "0.0.1", "not_vit": ["resnet"], "vit": {"vit_tiny_patch16_224": {"depth": 1}}}',
        encoding="utf-8",
    )
    monkeypatch.setattr(backbone_geometry, "LAYOUTS", other)
    backbone_geometry.timm_layouts.cache_clear()
    try:
        assert backbone_options.not_vit_modules() == frozenset()
        assert named_geometry("vit_tiny_patch16_224") is None
        check_backbone_name("resnet50")  # left to the full check
    finally:
        backbone_geometry.timm_layouts.cache_clear()


@pytest.mark.parametrize(
    "name", ["demo-vit", "vit_base_patch16_224.augreg_in21k", "deit_small_patch16_224",
             "eva02_tiny_patch14_224", "vit_large_patch14_clip_224"],
)  # fmt: skip
def test_the_named_geometry_is_the_built_models(name: str) -> None:
    from bench.backbone_config import meta_build

    if name != "demo-vit" and not _not_vit_written_for_this_timm():
        pytest.skip("timm_layouts.json was written for another timm version")
    built = model_geometry(meta_build(name))
    assert named_geometry(name) == built
    assert set(built) == {"depth", "patch", "width", "head_dim", "img_size"}


def test_a_named_input_size_is_the_one_a_run_uses() -> None:
    # a run's native size is its pretrained config's (bench.backbones.method_img_size)
    import timm

    from bench.backbone_config import backbone_config

    if not _not_vit_written_for_this_timm():
        pytest.skip("timm_layouts.json was written for another timm version")
    sized = [a for a, g in backbone_geometry.timm_layouts()["vit"].items() if "img_size" in g]
    assert len(sized) > 100
    for arch in sized:
        for name in (arch, *timm.list_pretrained(f"{arch}.*")):
            assert named_geometry(name)["img_size"] == backbone_config(name).img_size, name


def test_the_named_weights_source_is_the_pretrained_configs() -> None:
    import timm

    from bench.backbone_config import backbone_config
    from bench.backbone_options import weights_source
    from bench.timm_layouts import SOURCE_KEYS

    if not _not_vit_written_for_this_timm():
        pytest.skip("timm_layouts.json was written for another timm version")
    for arch in backbone_geometry.timm_layouts()["vit"]:
        for name in (arch, *timm.list_pretrained(f"{arch}.*")):
            cfg = backbone_config(name).pretrained_cfg
            assert weights_source(name) == {k: cfg[k] for k in SOURCE_KEYS if cfg.get(k)}, name


DEMO_SHAPE = {"depth": 4, "patch": 8, "width": 96, "head_dim": 16}


@pytest.mark.parametrize(
    ("name", "own", "img_size", "expected"),
    [
        ("demo-vit", False, None, DEMO_SHAPE | {"img_size": 64}),
        ("demo-vit", False, 96, DEMO_SHAPE | {"img_size": 96}),
        # FPT builds its frozen model at its own size: no input size is known early
        ("demo-vit", True, 96, DEMO_SHAPE),
        ("hf-hub:MahmoodLab/UNI", False, 224, {"img_size": 224}),
        ("hf-hub:MahmoodLab/UNI", False, None, None),
    ],
)
def test_the_cell_geometry_follows_the_size_the_method_runs_at(name, own, img_size, expected):
    assert cell_geometry(name, own_input_size=own, img_size=img_size) == expected


def test_a_hub_backbone_has_no_named_geometry() -> None:
    assert named_geometry("hf-hub:MahmoodLab/UNI") is None
