"""Shared fixtures and helpers: tiny ViTs, tiny MedMNIST-layout data, a private cache for demo-vit,
and grids run in subprocesses with their claims."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import settings

from bench import claims

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


def skip_if_unavailable(name: str) -> None:
    """Skip a test of a method this install cannot build (a tuner newer than the installed peft),
    giving the registry's reason; the test still runs wherever the method is available."""
    import methods

    reason = methods.get_method(name, include_unavailable=True).unavailable
    if reason:
        pytest.skip(reason)


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


# ------------------------------------------------- grids in subprocesses, and their claims


def grid_args(data_root: Path, results: Path, *extra: str) -> list[str]:
    """`bench run` on the tiny pneumoniamnist copy with the test ViT; `extra` adds options."""
    return [
        "run", "--datasets", "pneumoniamnist", "--data-root", str(data_root), "--backbone",
        "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size", "16", "--results",
        str(results), "--no-progress", *extra,
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    # MEDPEFT_CACHE (the session's private cache) is in os.environ already
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> bool:
    """Poll until `condition()` (True) or `proc` exits (False); fail after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def claim_files(results: Path) -> list[Path]:
    return sorted(claims.claims_dir(results).glob("*.claim"))


def claim_pids(results: Path) -> set[int]:
    """Pids of the processes holding claims now (running a cell)."""
    pids = set()
    for path in claims.claims_dir(results).glob("*.claim"):
        # released, or being written, while we looked: skipped
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.add(json.loads(path.read_text())["pid"])
    return pids


def write_claim(results: Path, run_id: str, **info) -> Path:
    """A claim file as another runner would have left it: this machine, unless `info` says."""
    folder = claims.claims_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.claim"
    body = {**claims.this_process(), "run_id": run_id, "token": "someone-else", **info}
    path.write_text(json.dumps(body))
    return path
