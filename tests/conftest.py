"""Shared fixtures: tiny ViTs, tiny MedMNIST-layout data, and a private cache for demo-vit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import settings

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Property tests draw at random on a developer's machine (new cases each run, failures saved in
# .hypothesis/ and replayed) but the same cases every run in CI, so a green CI stays green. Loaded
# before any test module builds its own settings, which inherit it.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep demo-vit weights made by tests out of the user's cache (pretrained once per session)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDPEFT_CACHE", str(tmp_path_factory.mktemp("medpeft-cache")))
    yield
    mp.undo()


def tiny_vit(num_classes: int = 3, **kwargs) -> torch.nn.Module:
    """A small timm VisionTransformer (32 px, 4 patches, 2 blocks) for fast contract tests."""
    cfg = dict(
        img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes
    )
    cfg.update(kwargs)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, **cfg)
    model.requires_grad_(False)
    return model


def write_medmnist_npz(
    path: Path, *, n=(48, 24, 24), size: int = 28, classes: int = 2, seed: int = 0
) -> Path:
    """A tiny npz in the exact layout the `medmnist` package downloads, with a learnable signal."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        labels = np.arange(count) % classes
        images = rng.integers(0, 120, size=(count, size, size), dtype=np.uint8)
        images[labels == 1, : size // 2] += 100  # class 1 is brighter in the top half
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    write_medmnist_npz(root / "pneumoniamnist.npz")
    return root
