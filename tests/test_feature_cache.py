"""Frozen-feature cache: rows keyed by image index and content, verified on open, rebuilt when not
usable, never left half-written, and sized/checked honestly (bench/feature_cache.py)."""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench import feature_cache
from bench.errors import UserError
from bench.feature_cache import (
    DISK_MARGIN,
    MANIFEST,
    CachedFeatures,
    CacheEntry,
    LiveFeatures,
    bytes_per_image,
    check_free_space,
    human_bytes,
    images_digest,
    load_or_build,
    open_cache,
)

COUNT = 10
BATCH = 4
SHAPES = {"k": (2, 3), "v": (4,)}
CPU = torch.device("cpu")


def make_images(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (COUNT, 3, 4, 4), dtype=torch.uint8, generator=gen)


def expected(images: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Features that are a pure function of each image's pixels (so a row names its image)."""
    flat = images.reshape(len(images), -1).float()
    return {
        # /7 is not exact in float16, so the float16 test measures a real rounding
        "k": (flat[:, :6] / 7 * scale).reshape(-1, 2, 3),
        "v": flat.reshape(len(images), 4, -1).sum(-1) / 3 * scale,
    }


class Compute:
    """`compute(start, end)` for `load_or_build` that records its calls."""

    def __init__(
        self,
        images: torch.Tensor,
        *,
        scale: float = 1.0,
        fail_at: int | None = None,
        error: type[BaseException] = RuntimeError,
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.images, self.scale, self.fail_at, self.error = images, scale, fail_at, error
        self.transform = transform
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> dict[str, torch.Tensor]:
        self.calls.append((start, end))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise self.error("boom")
        out = expected(self.images[start:end], self.scale)
        return self.transform(out) if self.transform else out


def identity_of(images: torch.Tensor, setting: int = 1) -> dict[str, Any]:
    # A Path and a tuple: the manifest stores them as JSON (str, list); reopening must still hit.
    return {
        "dataset": "toy",
        "images": images_digest(images),
        "setting": setting,
        "weights": Path("/weights/w.safetensors"),
        "normalization": (0.5, 0.25),
    }


def build(
    root: Path,
    images: torch.Tensor,
    *,
    dtype: str = "float32",
    identity: dict[str, Any] | None = None,
    compute: Compute | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[CacheEntry, Compute]:
    compute = compute or Compute(images)
    entry = load_or_build(
        identity if identity is not None else identity_of(images),
        count=len(images),
        shapes=SHAPES,
        dtype=dtype,
        compute=compute,
        batch_size=BATCH,
        root=root,
        on_progress=on_progress,
    )
    return entry, compute


def assert_rows(arrays: dict[str, np.ndarray], images: torch.Tensor, **kw: Any) -> None:
    """Every row equals the features of the image at the same index."""
    want = expected(images, kw.pop("scale", 1.0))
    assert set(arrays) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(torch.from_numpy(np.array(arrays[name])).float(), value, **kw)


def data_offset(file: Path) -> int:
    """Where the array data of a .npy file starts (after its header)."""
    return int(np.load(file, mmap_mode="r").offset)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# -- build, reopen, gather ------------------------------------------------------------------------


def test_build_then_reopen_is_a_verified_hit(tmp_path: Path) -> None:
    root, images = tmp_path / "features", make_images()
    progress: list[tuple[int, int]] = []
    first, built = build(root, images, on_progress=lambda d, t: progress.append((d, t)))
    assert not first.hit and first.rebuilt_because is None
    assert built.calls == [(0, 4), (4, 8), (8, 10)]
    assert progress == [(4, 10), (8, 10), (10, 10)]
    assert first.path.parent == root and leftovers(root) == [first.path.name]
    assert sorted(p.name for p in first.path.iterdir()) == sorted([MANIFEST, "k.npy", "v.npy"])
    assert first.bytes_on_disk == sum((first.path / f"{n}.npy").stat().st_size for n in SHAPES)
    assert_rows(first.arrays, images, rtol=0, atol=0)

    second, reopened = build(root, images)
    assert second.hit and second.rebuilt_because is None and reopened.calls == []
    assert second.path == first.path and second.bytes_on_disk == first.bytes_on_disk
    for name in SHAPES:
        assert np.array_equal(second.arrays[name], first.arrays[name])
        assert second.arrays[name].dtype == np.float32
        assert not second.arrays[name].flags.writeable  # opened read-only: training can't mutate
    assert_rows(second.arrays, images, rtol=0, atol=0)


def test_cached_features_gather_rows_in_index_order(tmp_path: Path) -> None:
    images = make_images()
    entry, _ = build(tmp_path, images, dtype="float16")
    source = CachedFeatures(entry.arrays, CPU)
    want = expected(images)
    for index in (
        torch.randperm(COUNT, generator=torch.Generator().manual_seed(1)),
        torch.tensor([9, 0, 9, 3]),
    ):
        got = source(index)
        assert set(got) == set(SHAPES)
        for name, value in got.items():
            assert value.dtype == torch.float32 and value.device == CPU
            assert value.shape == (len(index), *SHAPES[name])
            torch.testing.assert_close(value, want[name][index], rtol=1e-3, atol=0)


# -- keys -----------------------------------------------------------------------------------------


def test_images_digest_covers_content_order_and_shape() -> None:
    images = make_images()
    base = images_digest(images)
    assert images_digest(images.clone()) == base
    # same values through a non-contiguous view: the digest is of content, not memory layout
    strided = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not strided.is_contiguous() and images_digest(strided) == base

    one_pixel = images.clone()
    one_pixel[5, 1, 2, 3] ^= 1
    swapped = images.clone()
    swapped[[2, 3]] = images[[3, 2]]
    reshaped = images.reshape(COUNT, 3, 2, 8)  # identical bytes, other shape
    digests = {base, images_digest(one_pixel), images_digest(swapped), images_digest(reshaped)}
    assert len(digests) == 4


def test_changed_images_get_their_own_cache(tmp_path: Path) -> None:
    images = make_images()
    old, _ = build(tmp_path, images)
    changed = images.clone()
    changed[5, 0, 0, 0] ^= 0xFF  # feeds k[5, 0, 0] and v[5, 0]
    new, compute = build(tmp_path, changed)
    assert not new.hit and new.path != old.path and compute.calls
    assert_rows(new.arrays, changed, rtol=0, atol=0)
    assert not np.array_equal(new.arrays["k"][5], old.arrays["k"][5])


def test_identical_images_at_different_indices(tmp_path: Path) -> None:
    images = make_images()
    images[7] = images[2]
    entry, _ = build(tmp_path, images)
    assert_rows(entry.arrays, images, rtol=0, atol=0)
    for name in SHAPES:
        assert np.array_equal(entry.arrays[name][2], entry.arrays[name][7])
    got = CachedFeatures(entry.arrays, CPU)(torch.tensor([7, 2]))
    torch.testing.assert_close(got["k"][0], expected(images[2:3])["k"][0], rtol=0, atol=0)


def test_other_setting_or_dtype_gets_another_path(tmp_path: Path) -> None:
    images = make_images()
    a, _ = build(tmp_path, images, identity=identity_of(images, setting=1))
    b, compute_b = build(
        tmp_path,
        images,
        identity=identity_of(images, setting=2),
        compute=Compute(images, scale=2.0),
    )
    assert not b.hit and compute_b.calls and b.path != a.path
    assert_rows(b.arrays, images, scale=2.0, rtol=0, atol=0)  # not a's rows
    c, compute_c = build(tmp_path, images, identity=identity_of(images, setting=1), dtype="float16")
    assert not c.hit and compute_c.calls and c.path not in (a.path, b.path)
    # the earlier caches are untouched and still hit with their own values
    again, compute = build(tmp_path, images, identity=identity_of(images, setting=1))
    assert again.hit and again.path == a.path and compute.calls == []
    assert_rows(again.arrays, images, rtol=0, atol=0)
    assert len(leftovers(tmp_path)) == 3


# -- corruption -----------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    file = path / "k.npy"
    file.write_bytes(file.read_bytes()[:-10])


def _flip(path: Path) -> None:
    file = path / "k.npy"
    data = bytearray(file.read_bytes())
    data[data_offset(file) + 5] ^= 0x40
    file.write_bytes(bytes(data))


def _edit_manifest(**changes: Any) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        manifest = json.loads((path / MANIFEST).read_text())
        for key, value in changes.items():
            if key == "setting":
                manifest["identity"]["setting"] = value
            else:
                manifest[key] = value
        (path / MANIFEST).write_text(json.dumps(manifest))

    return edit


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "corrupt (k.npy has the wrong size)"),
    "flipped-byte": (_flip, "corrupt (k.npy fails its checksum)"),
    "no-manifest": (lambda p: (p / MANIFEST).unlink(), "incomplete (no manifest)"),
    "stale-identity": (
        _edit_manifest(setting=2),
        "stale (made with other settings or another format)",
    ),
    "old-format": (_edit_manifest(format=0), "stale (made with other settings or another format)"),
    "not-json": (lambda p: (p / MANIFEST).write_text("{not json"), "corrupt manifest"),
    "json-list": (lambda p: (p / MANIFEST).write_text("[1, 2]"), "corrupt manifest"),
    "missing-array": (lambda p: (p / "v.npy").unlink(), "corrupt (v.npy unreadable)"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_is_detected_and_rebuilt(tmp_path: Path, kind: str) -> None:
    corrupt, reason = CORRUPTIONS[kind]
    images = make_images()
    identity = identity_of(images)
    entry, _ = build(tmp_path, images, identity=identity)
    path = entry.path
    assert isinstance(open_cache(path, {**identity, "dtype": "float32"}), dict)
    del entry  # drop its memory maps before the files change under them

    corrupt(path)
    assert open_cache(path, {**identity, "dtype": "float32"}) == reason
    rebuilt, compute = build(tmp_path, images, identity=identity)
    assert not rebuilt.hit and rebuilt.rebuilt_because == reason
    assert compute.calls == [(0, 4), (4, 8), (8, 10)]
    assert rebuilt.path == path and leftovers(tmp_path) == [path.name]
    assert_rows(rebuilt.arrays, images, rtol=0, atol=0)
    again, compute = build(tmp_path, images, identity=identity)
    assert again.hit and compute.calls == []


def test_open_cache_on_missing_directory(tmp_path: Path) -> None:
    assert open_cache(tmp_path / "nope", {"a": 1}) == "missing"


# -- failed builds leave nothing behind -----------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_crash_in_compute_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    root, images = tmp_path / "features", make_images()
    crashing = Compute(images, fail_at=2, error=error)
    with pytest.raises(error, match="boom"):
        build(root, images, compute=crashing)
    assert len(crashing.calls) == 2
    assert leftovers(root) == []  # neither the cache nor its temporary directory
    entry, compute = build(root, images)
    assert not entry.hit and entry.rebuilt_because is None and compute.calls
    assert_rows(entry.arrays, images, rtol=0, atol=0)
    assert leftovers(root) == [entry.path.name]


def test_wrong_feature_shape_is_a_clear_error(tmp_path: Path) -> None:
    images = make_images()
    bad = Compute(images, transform=lambda out: {**out, "k": out["k"].reshape(-1, 3, 2)})
    with pytest.raises(RuntimeError, match=r"feature 'k' has shape \(3, 2\), expected \(2, 3\)"):
        build(tmp_path, images, compute=bad)
    assert leftovers(tmp_path) == []


def test_build_finished_first_by_another_runner(tmp_path: Path) -> None:
    """A concurrent identical build that lands first: the result is one valid cache, no temp."""
    images = make_images()
    identity = identity_of(images)
    inner: list[CacheEntry] = []

    def compute(start: int, end: int) -> dict[str, torch.Tensor]:
        if not inner:
            inner.append(build(tmp_path, images, identity=identity)[0])
        return expected(images[start:end])

    outer, _ = build(tmp_path, images, identity=identity, compute=compute)  # type: ignore[arg-type]
    assert not inner[0].hit and not outer.hit and outer.path == inner[0].path
    assert leftovers(tmp_path) == [outer.path.name]
    assert_rows(outer.arrays, images, rtol=0, atol=0)
    assert isinstance(open_cache(outer.path, {**identity, "dtype": "float32"}), dict)


# -- dtype and sizes ------------------------------------------------------------------------------


def test_float16_halves_the_data_and_keeps_values(tmp_path: Path) -> None:
    images = make_images()
    full, _ = build(tmp_path, images, dtype="float32")
    half, _ = build(tmp_path, images, dtype="float16")
    assert half.path != full.path
    for name, shape in SHAPES.items():
        assert full.arrays[name].dtype == np.float32 and half.arrays[name].dtype == np.float16
        f32, f16 = full.path / f"{name}.npy", half.path / f"{name}.npy"
        data32 = f32.stat().st_size - data_offset(f32)
        data16 = f16.stat().st_size - data_offset(f16)
        assert data32 == COUNT * int(np.prod(shape)) * 4 and data16 * 2 == data32
    assert_rows(half.arrays, images, rtol=1e-3, atol=0)
    assert not np.array_equal(half.arrays["k"].astype(np.float32), full.arrays["k"])  # rounded
    with pytest.raises(ValueError, match="cache dtype must be one of"):
        build(tmp_path, images, dtype="bfloat16")


def test_bytes_per_image_and_human_bytes() -> None:
    paper = {"k": (6, 12, 205, 64), "v": (6, 12, 205, 64)}  # FPT+ keys and values, ViT-B
    assert bytes_per_image(paper, "float32") == 2 * 6 * 12 * 205 * 64 * 4
    assert bytes_per_image(paper, "float16") == 2 * 6 * 12 * 205 * 64 * 2
    assert human_bytes(bytes_per_image(paper, "float32")) == "7.2 MiB"
    assert bytes_per_image(SHAPES, "float32") == (6 + 4) * 4
    assert human_bytes(0) == "0 B" and human_bytes(1023) == "1023 B"
    assert human_bytes(1024) == "1.0 KiB" and human_bytes(1.5 * 2**30) == "1.5 GiB"
    assert human_bytes(2**50) == "1024.0 TiB"


# -- disk space -----------------------------------------------------------------------------------


def test_check_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[Path] = []
    free = 100 * 2**20

    def disk_usage(path: Path) -> types.SimpleNamespace:
        probed.append(Path(path))
        return types.SimpleNamespace(total=2 * free, used=free, free=free)

    monkeypatch.setattr(feature_cache.shutil, "disk_usage", disk_usage)
    where = tmp_path / "not" / "yet"
    needed = 2 * 6 * 12 * 205 * 64 * 4
    with pytest.raises(UserError) as info:
        check_free_space(where, needed)
    message = str(info.value)
    assert probed == [tmp_path]  # the nearest existing parent
    for part in ("7.2 MiB", "100.0 MiB", str(where), "MEDPEFT_CACHE", "float16", "preload=false"):
        assert part in message, part

    # the margin counts: exactly enough passes, one byte less fails
    free = needed + DISK_MARGIN
    assert check_free_space(where, needed) == free
    free = needed + DISK_MARGIN - 1
    with pytest.raises(UserError):
        check_free_space(where, needed)


def test_build_that_does_not_fit_fails_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        feature_cache.shutil, "disk_usage", lambda _p: types.SimpleNamespace(free=2**20)
    )
    images = make_images()
    compute = Compute(images)
    with pytest.raises(UserError, match="feature cache needs about"):
        build(tmp_path, images, compute=compute)
    assert compute.calls == [] and leftovers(tmp_path) == []


# -- live features --------------------------------------------------------------------------------


class FrozenPart(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def frozen_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(x)
        return {"k": x.mean(dim=(1, 2, 3))}


def test_live_features_run_the_frozen_part_on_prepared_images() -> None:
    images = make_images()[:3]
    model = FrozenPart()
    live = LiveFeatures(model, lambda im: im.float() / 255)
    out = live(torch.tensor([4, 1, 7]), images)
    assert len(model.seen) == 1
    torch.testing.assert_close(model.seen[0], images.float() / 255, rtol=0, atol=0)
    torch.testing.assert_close(out["k"], (images.float() / 255).mean(dim=(1, 2, 3)))


def test_a_cache_whose_shapes_differ_from_the_request_is_rebuilt(tmp_path: Path) -> None:
    """Same identity, other feature shapes (a gap in the caller's identity): never reuse it."""
    identity = {"case": "shapes"}
    first = load_or_build(
        identity, count=4, shapes={"k": (2,)}, dtype="float32", batch_size=4, root=tmp_path,
        compute=lambda a, b: {"k": torch.zeros(b - a, 2)},
    )  # fmt: skip
    assert not first.hit
    second = load_or_build(
        identity, count=4, shapes={"q": (7,)}, dtype="float32", batch_size=4, root=tmp_path,
        compute=lambda a, b: {"q": torch.ones(b - a, 7)},
    )  # fmt: skip
    assert not second.hit and "shapes" in second.rebuilt_because
    assert set(second.arrays) == {"q"} and second.arrays["q"].shape == (4, 7)
    assert np.all(second.arrays["q"] == 1)
