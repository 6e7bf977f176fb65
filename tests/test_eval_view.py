"""Evaluation preprocessing from the backbone's pretrained config: the pixels timm's eval
transform makes, demo-vit's plain resize kept, and a feature-cache key that follows the view."""

from __future__ import annotations

import pytest
import timm
import timm.data
import torch

from bench.backbone_config import backbone_config
from bench.config import CellConfig
from bench.errors import UserError
from bench.eval_view import PLAIN_RESIZE, EvalView
from bench.frozen_features import feature_identity
from bench.transforms import Preprocess, prepare_batch

MEAN, STD = (0.31, 0.42, 0.53), (0.21, 0.26, 0.17)


def timm_eval(images: torch.Tensor, cfg: dict, img_size: int) -> torch.Tensor:
    """timm's own eval transform, built as timm builds it for a model, on each image."""
    data = timm.data.resolve_data_config(
        {"input_size": (3, img_size, img_size)}, pretrained_cfg=cfg
    )
    transform = timm.data.create_transform(**data, is_training=False)
    return torch.stack([transform(image.float() / 255) for image in images])


def uint8_images(c: int, h: int, w: int, n: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(h * w))


@pytest.mark.parametrize(
    ("interpolation", "crop_pct", "crop_mode"),
    [
        ("bicubic", 0.9, "center"),
        ("bicubic", 0.875, "center"),
        ("bilinear", 1.0, "center"),
        ("bicubic", 0.95, "squash"),
        ("nearest", 0.9, "center"),
        ("bicubic", 1.15, "center"),  # crop larger than the resized image: zero-padded
    ],
)
@pytest.mark.parametrize(("h", "w"), [(48, 48), (50, 37), (30, 61), (20, 20)])
def test_eval_pixels_equal_timms_eval_transform(interpolation, crop_pct, crop_mode, h, w) -> None:
    cfg = {"mean": MEAN, "std": STD, "interpolation": interpolation, "crop_pct": crop_pct,
           "crop_mode": crop_mode}  # fmt: skip
    images = uint8_images(3, h, w)
    prep = Preprocess.for_backbone(cfg, img_size=32)
    got = prep.evaluation(images)
    assert got.shape == (2, 3, 32, 32)
    torch.testing.assert_close(got, timm_eval(images, cfg, 32), rtol=0, atol=1e-5)


def test_crop_and_interpolation_change_the_eval_pixels() -> None:
    images = uint8_images(3, 48, 40)
    norm = {"mean": MEAN, "std": STD}
    plain = prepare_batch(images, img_size=32, train=False, **norm)
    crop = prepare_batch(
        images, img_size=32, train=False, eval_view=EvalView("bilinear", 0.9, "center"), **norm
    )
    bicubic = prepare_batch(
        images, img_size=32, train=False, eval_view=EvalView("bicubic", 0.9, "center"), **norm
    )
    assert not torch.allclose(plain, crop) and not torch.allclose(crop, bicubic)
    # the plain view is the old evaluation: the whole image, bilinear, antialiased
    whole = torch.nn.functional.interpolate(
        images.float() / 255, size=(32, 32), mode="bilinear", antialias=True, align_corners=False
    )
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(plain, (whole - mean) / std)


def test_grey_images_are_expanded_before_the_view() -> None:
    grey = uint8_images(1, 40, 50)
    prep = Preprocess.for_backbone({"crop_pct": 0.9, "interpolation": "bicubic"}, img_size=32)
    torch.testing.assert_close(
        prep.evaluation(grey), prep.evaluation(grey.expand(-1, 3, -1, -1)), rtol=0, atol=0
    )


def test_demo_vit_keeps_its_plain_resize() -> None:
    from bench.backbones import create_backbone, resolve_backbone
    from bench.demo_vit import DEMO_VIT_MEAN

    # the config the harness reads: the built model's, demo-vit's overlay applied
    model = create_backbone(
        resolve_backbone("demo-vit", pretrained=False, weights=None), num_classes=2
    )
    prep = Preprocess.for_backbone(dict(model.pretrained_cfg), img_size=64)
    assert prep.eval_view == PLAIN_RESIZE and prep.eval_view.plain
    assert prep.mean == tuple(DEMO_VIT_MEAN)
    assert prep.describe()["resize_to"] == 64


def test_registry_backbone_uses_timms_cfg() -> None:
    cfg = backbone_config("test_vit").pretrained_cfg
    view = Preprocess.for_backbone(cfg, img_size=32).eval_view
    # test_vit's crop_pct is 0.875 in timm 1.0.9 and 0.95 in later releases: whichever it is here
    assert view == EvalView(
        "bicubic", timm.models.get_pretrained_cfg("test_vit").crop_pct, "center"
    )
    assert view.crop_pct < 1


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"interpolation": "lanczos"}, "'lanczos' interpolation"),
        ({"crop_mode": "border"}, "crop_mode 'border'"),
        ({"crop_pct": -0.5}, "crop_pct -0.5"),
    ],
)
def test_a_view_the_suite_cannot_apply_is_a_user_error(cfg: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Preprocess.for_backbone(cfg, img_size=32)


class _Frozen:
    def feature_identity(self) -> dict:
        return {"layers": [1]}


def test_feature_cache_key_follows_the_eval_view() -> None:
    from types import SimpleNamespace

    cell = CellConfig(method="fpt", dataset="d", seed=0, backbone="test_vit", pretrained=True,
                      weights=None, weights_sha256=None, epochs=1, batch_size=2, img_size=32,
                      device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                      weight_decay=0.0, warmup_epochs=0.0, grad_clip=1.0)  # fmt: skip
    split = SimpleNamespace(images_digest="abc")
    data = SimpleNamespace(card=SimpleNamespace(name="d"), splits={"test": split})

    def identity(view: EvalView) -> dict:
        prep = Preprocess(img_size=32, mean=MEAN, std=STD, eval_view=view)
        return feature_identity(_Frozen(), cell, data, "test", prep)

    plain = identity(PLAIN_RESIZE)
    # a plain resize keys as before the view existed: caches built then are still found
    assert "eval_view" not in plain
    cropped = identity(EvalView("bicubic", 0.9, "center"))
    assert cropped["eval_view"] == {"interpolation": "bicubic", "crop_pct": 0.9,
                                    "crop_mode": "center"}  # fmt: skip
    assert cropped != identity(EvalView("bicubic", 0.875, "center"))
    assert {k: v for k, v in cropped.items() if k != "eval_view"} == plain
