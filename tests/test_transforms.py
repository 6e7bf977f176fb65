"""Batch transforms: deterministic evaluation, seeded training augmentation presets, crop sampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UserError
from bench.eval_view import EvalView
from bench.transforms import (
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    Augmentation,
    Preprocess,
    color_jitter,
    get_augmentation,
    jitter_factors,
    prepare_batch,
    sample_crop_params,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORM = dict(mean=MEAN, std=STD)


def images(b: int = 4, c: int = 3, h: int = 40, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def reference_eval(x: torch.Tensor, size: int) -> torch.Tensor:
    """Written from the spec: [0,1] floats, grey -> RGB, antialiased bilinear resize, normalise."""
    f = x.to(torch.float32) / 255.0
    f = f.repeat(1, 3 // f.shape[1], 1, 1)
    if f.shape[-2:] != (size, size):
        f = F.interpolate(f, size=(size, size), mode="bilinear", antialias=True)
    return (f - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def train(x: torch.Tensor, augment, seed: int = 0, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return prepare_batch(x, img_size=size, train=True, generator=g, augment=augment, **NORM)


# ------------------------------------------------------------------ presets and names
def test_presets_match_their_sources() -> None:
    assert DEFAULT_AUGMENT == "rrc-flip"
    assert set(AUGMENTATIONS) == {"rrc-flip", "ept", "fpt", "flip", "none"}
    a = AUGMENTATIONS
    assert (a["rrc-flip"].crop_scale, a["rrc-flip"].crop_ratio) == ((0.8, 1.0), (3 / 4, 4 / 3))
    assert (a["ept"].crop_scale, a["ept"].crop_ratio) == ((0.08, 1.0), (3 / 4, 4 / 3))
    fpt = a["fpt"]
    assert (fpt.crop_scale, fpt.crop_ratio, fpt.hflip, fpt.vflip) == (
        (0.8, 1.0),
        (0.7, 1.3),
        0.5,
        0,
    )
    assert (fpt.brightness, fpt.contrast) == (0.2, 0.2)
    assert a["flip"].crop_scale is None and a["flip"].hflip == 0.5
    assert a["none"].crop_scale is None and a["none"].hflip == a["none"].vflip == 0
    for name, aug in a.items():
        assert aug.name == name and aug.summary and "\n" not in aug.summary
        if name != "fpt":
            assert aug.brightness == aug.contrast == aug.vflip == 0


def test_unknown_preset_is_a_user_error_listing_names() -> None:
    with pytest.raises(UserError) as err:
        get_augmentation("rrc")
    for name in AUGMENTATIONS:
        assert name in str(err.value)
    with pytest.raises(UserError):
        prepare_batch(images(), img_size=16, train=True, augment="nope", **NORM)
    assert get_augmentation("fpt") is AUGMENTATIONS["fpt"]


# ------------------------------------------------------------------ evaluation
@pytest.mark.parametrize(
    ("c", "h", "w", "size"), [(3, 40, 40, 16), (1, 28, 28, 32), (3, 30, 50, 16)]
)
def test_eval_is_a_plain_resize_for_every_preset(c: int, h: int, w: int, size: int) -> None:
    x = images(c=c, h=h, w=w)
    expected = reference_eval(x, size)
    for name in AUGMENTATIONS:
        out = prepare_batch(x, img_size=size, train=False, augment=name, **NORM)
        assert out.dtype == torch.float32 and out.shape == (4, 3, size, size)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        # evaluation consumes no randomness and ignores the generator
        g = torch.Generator().manual_seed(5)
        again = prepare_batch(x, img_size=size, train=False, generator=g, augment=name, **NORM)
        assert torch.equal(again, out)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_eval_same_size_is_exact() -> None:
    x = images(h=16, w=16)
    out = prepare_batch(x, img_size=16, train=False, **NORM)
    assert torch.equal(
        out,
        (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None],
    )


def test_none_in_training_equals_eval() -> None:
    for shape in [(3, 40, 40), (1, 30, 50)]:
        x = images(c=shape[0], h=shape[1], w=shape[2])
        ev = prepare_batch(x, img_size=16, train=False, **NORM)
        assert torch.equal(train(x, "none"), ev)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
@pytest.mark.parametrize(("c", "h", "w"), [(3, 40, 40), (1, 28, 28), (3, 30, 52), (1, 52, 30)])
def test_train_shape_dtype_device(name: str, c: int, h: int, w: int) -> None:
    out = train(images(c=c, h=h, w=w), name)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    if c == 1:  # grey stays grey: three identical channels (jitter/crop act on all alike)
        plain = out * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
        torch.testing.assert_close(plain[:, 1], plain[:, 0], rtol=0, atol=1e-5)
        torch.testing.assert_close(plain[:, 2], plain[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["rrc-flip", "ept", "fpt", "flip"])
def test_seed_reproduces_and_differs(name: str) -> None:
    x = images(b=8, h=48, w=40)
    a, b = train(x, name, seed=1), train(x, name, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, train(x, name, seed=2))
    # a generator carries on: the next batch differs from the first
    g = torch.Generator().manual_seed(1)
    first = prepare_batch(x, img_size=16, train=True, generator=g, augment=name, **NORM)
    second = prepare_batch(x, img_size=16, train=True, generator=g, augment=name, **NORM)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_flip_is_image_or_mirror_per_sample_and_matches_old_draws() -> None:
    x = images(b=16)
    out = train(x, "flip", seed=3)
    ev = prepare_batch(x, img_size=16, train=False, **NORM)
    mirrored = [torch.equal(out[i], ev[i].flip(-1)) for i in range(16)]
    for i in range(16):
        assert torch.equal(out[i], ev[i]) or mirrored[i]
    assert 0 < sum(mirrored) < 16  # both outcomes occur with this seed
    # exactly the old flip-only transform's draws: one rand(B) < 0.5 from the generator
    assert mirrored == (torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5).tolist()


def test_vflip() -> None:
    x = images(b=16)
    aug = Augmentation("v", crop_scale=None, hflip=0.0, vflip=0.5)
    out = train(x, aug, seed=4)
    ev = prepare_batch(x, img_size=16, train=False, **NORM)
    flipped = [torch.equal(out[i], ev[i].flip(-2)) for i in range(16)]
    assert all(torch.equal(out[i], ev[i]) or flipped[i] for i in range(16))
    assert 0 < sum(flipped) < 16


@pytest.mark.parametrize(("h", "w", "size"), [(40, 40, 16), (16, 16, 16)])
def test_full_crop_equals_eval(h: int, w: int, size: int) -> None:
    x = images(h=h, w=w)
    aug = Augmentation("whole", crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0)
    ev = prepare_batch(x, img_size=size, train=False, **NORM)
    torch.testing.assert_close(train(x, aug, size=size), ev, rtol=0, atol=1e-6)


def test_crop_resizes_the_sampled_box_with_antialias() -> None:
    """Each output image is its own box (drawn first, in image order) resized alone."""
    x = images(b=3, h=64, w=48)
    aug = Augmentation("c", crop_scale=(0.1, 0.5), hflip=0.0)
    out = train(x, aug, seed=7)
    g = torch.Generator().manual_seed(7)
    boxes = [sample_crop_params(64, 48, (0.1, 0.5), (3 / 4, 4 / 3), g) for _ in range(3)]
    for i, (top, left, h, w) in enumerate(boxes):
        crop = x[i : i + 1, :, top : top + h, left : left + w]
        torch.testing.assert_close(out[i : i + 1], reference_eval(crop, 16), rtol=0, atol=1e-6)
    assert len({b[2:] for b in boxes}) > 1  # crop sizes vary


# ------------------------------------------------------------------ crop sampler
@pytest.mark.parametrize(
    ("h", "w", "scale", "ratio"),
    [
        (64, 64, (0.08, 1.0), (3 / 4, 4 / 3)),
        (512, 384, (0.8, 1.0), (0.7, 1.3)),
        (37, 91, (0.08, 1.0), (3 / 4, 4 / 3)),
        (100, 30, (0.3, 0.6), (0.5, 2.0)),
    ],
)
def test_crop_boxes_inside_and_in_range(h: int, w: int, scale, ratio) -> None:
    g = torch.Generator().manual_seed(0)
    areas, ratios, corners = [], [], []
    for _ in range(500):
        top, left, ch, cw = sample_crop_params(h, w, scale, ratio, g)
        assert min(top, left) >= 0 and min(ch, cw) > 0
        assert top + ch <= h and left + cw <= w
        fallback = (top, left) == ((h - ch) // 2, (w - cw) // 2) and (ch == h or cw == w)
        if not fallback:
            # cw = round(sqrt(A * r)), ch = round(sqrt(A / r)) with A in scale * h * w and r in
            # ratio, so A = sqrt(A r) sqrt(A / r) and r = sqrt(A r) / sqrt(A / r) lie within
            # half a pixel of the box: those intervals must meet the allowed ranges.
            eps = 1e-9
            assert (cw - 0.5) * (ch - 0.5) <= scale[1] * h * w + eps
            assert (cw + 0.5) * (ch + 0.5) >= scale[0] * h * w - eps
            assert (cw - 0.5) / (ch + 0.5) <= ratio[1] + eps
            assert (cw + 0.5) / (ch - 0.5) >= ratio[0] - eps
            areas.append(ch * cw / (h * w))
            ratios.append(cw / ch)
            corners.append((top, left))
    assert len(areas) > 400  # these settings rarely fall back
    # the draws vary (sizes and positions) rather than sticking to one box
    assert len(set(areas)) > 50 and len(set(ratios)) > 50 and len(set(corners)) > 50


def test_crop_area_and_ratio_exact_when_unrounded() -> None:
    """Large image: rounding is negligible, so area and ratio must lie within the ranges."""
    g = torch.Generator().manual_seed(1)
    h = w = 4000
    for _ in range(300):
        _, _, ch, cw = sample_crop_params(h, w, (0.2, 0.6), (0.5, 1.5), g)
        assert 0.2 - 1e-3 <= ch * cw / (h * w) <= 0.6 + 1e-3
        assert 0.5 - 1e-3 <= cw / ch <= 1.5 + 1e-3


def test_crop_fallback_is_central_with_clamped_ratio() -> None:
    g = torch.Generator().manual_seed(0)
    # 2 x 100: every attempt needs h = round(sqrt(A / r)) >= 3 px, so all 10 fail; the central
    # crop keeps the height and takes the widest ratio: w = round(2 * 4 / 3) = 3.
    assert sample_crop_params(2, 100, (0.08, 1.0), (3 / 4, 4 / 3), g) == (0, 48, 2, 3)
    # 100 x 2 (too tall): width kept, height from the lowest ratio: round(2 / 0.75) = 3.
    assert sample_crop_params(100, 2, (0.08, 1.0), (3 / 4, 4 / 3), g) == (48, 0, 3, 2)
    # scale > 1 never fits; an image whose ratio is allowed falls back to the whole image.
    assert sample_crop_params(30, 30, (2.0, 3.0), (0.5, 2.0), g) == (0, 0, 30, 30)
    # through prepare_batch: a very wide image trains on its central square
    x = images(b=2, h=4, w=60)
    aug = Augmentation("wide", crop_scale=(0.5, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0)
    centre = prepare_batch(x[:, :, :, 28:32], img_size=16, train=False, **NORM)
    torch.testing.assert_close(train(x, aug), centre, rtol=0, atol=1e-6)


def test_crop_params_match_torchvision_draws() -> None:
    """Same global seed -> same box as torchvision's RandomResizedCrop.get_params (if present)."""
    tv = pytest.importorskip("torchvision.transforms")
    img = torch.zeros(3, 57, 83)
    for seed in range(40):
        for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.8, 1.0), (0.7, 1.3))]:
            torch.manual_seed(seed)
            expected = tuple(tv.RandomResizedCrop.get_params(img, list(scale), list(ratio)))
            torch.manual_seed(seed)
            assert sample_crop_params(57, 83, scale, ratio) == expected
    for h, w in [(2, 100), (100, 2)]:
        img = torch.zeros(1, h, w)
        expected = tuple(tv.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]))
        assert sample_crop_params(h, w, (0.08, 1.0), (3 / 4, 4 / 3)) == expected


# ------------------------------------------------------------------ brightness / contrast
def test_color_jitter_formula() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    fb, fc = torch.tensor([0.8, 1.2, 1.0]), torch.tensor([1.2, 0.8, 0.9])
    out = color_jitter(x, fb, fc)
    for i in range(3):
        y = (x[i] * fb[i]).clamp(0, 1)
        m = (0.2989 * y[0] + 0.587 * y[1] + 0.114 * y[2]).mean()
        y = (fc[i] * y + (1 - fc[i]) * m).clamp(0, 1)
        torch.testing.assert_close(out[i], y, rtol=0, atol=1e-6)
    assert torch.equal(color_jitter(x, None, None), x)
    tvf = pytest.importorskip("torchvision.transforms.functional")
    for i in range(3):
        ref = tvf.adjust_contrast(tvf.adjust_brightness(x[i], float(fb[i])), float(fc[i]))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-6)


def test_jitter_factors_follow_colorjitter_ranges() -> None:
    """U[max(0, 1 - a), 1 + a] as torchvision's ColorJitter; a = 0 draws nothing."""
    g = torch.Generator().manual_seed(0)
    assert jitter_factors(8, 0.0, g) is None
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    for amount, lo, hi in [(0.2, 0.8, 1.2), (1.5, 0.0, 2.5)]:
        f = jitter_factors(4000, amount, g)
        assert f is not None and f.shape == (4000,) and f.device.type == "cpu"
        assert f.min() >= lo and f.max() <= hi
        span = hi - lo
        assert f.min() < lo + 0.01 * span and f.max() > hi - 0.01 * span


def test_jitter_factor_ranges_through_prepare_batch() -> None:
    """Brightness on a flat grey image and contrast on a two-level one expose each factor."""
    n = 256
    one = dict(mean=(0.0,) * 3, std=(1.0,) * 3)
    flat = torch.full((n, 1, 8, 8), 128, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    aug_b = Augmentation("b", crop_scale=None, hflip=0.0, brightness=0.2)
    out = prepare_batch(flat, img_size=8, train=True, generator=g, augment=aug_b, **one)
    assert torch.equal(out, out[:, :1, :1, :1].expand_as(out))  # still flat: one factor each
    fb = out[:, 0, 0, 0] / (128 / 255)
    assert fb.min() >= 0.8 - 1e-6 and fb.max() <= 1.2 + 1e-6
    assert fb.min() < 0.83 and fb.max() > 1.17 and len(fb.unique()) > n // 2

    halves = torch.full((n, 1, 8, 8), 64, dtype=torch.uint8)
    halves[..., 4:] = 192
    aug_c = Augmentation("c", crop_scale=None, hflip=0.0, contrast=0.2)
    out = prepare_batch(halves, img_size=8, train=True, generator=g, augment=aug_c, **one)
    fc = (out[:, 0, 0, 7] - out[:, 0, 0, 0]) / (128 / 255)
    assert fc.min() >= 0.8 - 1e-5 and fc.max() <= 1.2 + 1e-5
    assert fc.min() < 0.83 and fc.max() > 1.17
    # blending with the image's grey mean keeps that mean (luma weights sum to 0.9999)
    torch.testing.assert_close(
        out.mean(dim=(1, 2, 3)), torch.full((n,), 128 / 255), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize(
    "aug",
    [
        AUGMENTATIONS["fpt"],
        Augmentation("big", crop_scale=(0.5, 1.0), brightness=1.5, contrast=1.5),
    ],
)
def test_jitter_output_stays_in_unit_range(aug: Augmentation) -> None:
    """Factors up to 2.5 would leave [0,1] without the clamp; max(0, 1 - b) keeps them >= 0."""
    x = images(b=64, h=24, w=24)
    plain = train(x, aug, size=8) * torch.tensor(STD)[:, None, None]
    plain = plain + torch.tensor(MEAN)[:, None, None]
    assert plain.min() >= -1e-6 and plain.max() <= 1 + 1e-6


def test_light_modules_spell_the_default_preset_alike() -> None:
    # config and runner avoid importing torch, so they repeat the name; keep them in step
    from bench.config import CellConfig
    from bench.grid import GridRequest

    assert CellConfig.__dataclass_fields__["augment"].default == DEFAULT_AUGMENT
    assert GridRequest.__dataclass_fields__["augment"].default == DEFAULT_AUGMENT


def test_preprocess_applies_prepare_batch_with_the_cells_settings() -> None:
    cfg = {"mean": MEAN, "std": STD, "interpolation": "bicubic", "crop_pct": 0.9}
    pre = Preprocess.for_backbone(cfg, img_size=24, augment="fpt")
    assert (pre.img_size, pre.mean, pre.std, pre.augment) == (24, MEAN, STD, "fpt")
    assert pre.eval_view == EvalView("bicubic", 0.9, "center")  # timm's default crop mode
    x = images()
    want = prepare_batch(x, img_size=24, train=False, eval_view=pre.eval_view, **NORM)
    assert torch.equal(pre(x, train=False), want)
    assert not torch.equal(want, prepare_batch(x, img_size=24, train=False, **NORM))
    got = pre(x, train=True, generator=torch.Generator().manual_seed(3))
    want = prepare_batch(
        x,
        img_size=24,
        train=True,
        generator=torch.Generator().manual_seed(3),
        augment="fpt",
        **NORM,
    )
    assert torch.equal(got, want)


def test_preprocess_defaults_and_checks_the_preset() -> None:
    pre = Preprocess.for_backbone({}, img_size=16)
    assert (pre.mean, pre.std, pre.augment) == ((0.5,) * 3, (0.5,) * 3, DEFAULT_AUGMENT)
    with pytest.raises(UserError, match="unknown augmentation"):
        Preprocess.for_backbone({}, img_size=16, augment="bogus")
