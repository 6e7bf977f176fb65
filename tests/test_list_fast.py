"""`bench list` answers from the torch-free manifest at its defaults, and counts any other
backbone on the meta device: the same rows and counts as the registry built on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import method_counts
from bench.backbone_config import weightless
from bench.backbones import default_img_size, method_img_size
from bench.cli import app
from bench.cli.list import manifest_rows, registry_rows
from bench.method_manifest import COUNT_BACKBONE, COUNT_CLASSES, load_manifest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "timm", "peft", "methods")


@pytest.fixture(scope="module")
def manifest() -> dict:
    found = load_manifest()
    assert found is not None, "stale: regenerate it with `python -m bench.method_manifest`"
    return found


def test_list_at_its_defaults_imports_no_torch(manifest: dict) -> None:
    # every kind but spaces (which reads the registry's search spaces) is torch-free
    code = (
        "import sys\n"
        "from bench.cli import app\n"
        "for kind in ('methods', 'datasets', 'augmentations', 'protocols', 'backbones'):\n"
        "    app(['list', kind], standalone_mode=False)\n"
        "    app(['list', kind, '--json'], standalone_mode=False)\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[-1] == "HEAVY []"
    assert "CUDA" not in out.stderr


def test_manifest_rows_are_the_registrys(manifest: dict) -> None:
    # the registry's rows count every method on demo-vit (on the meta device)
    assert manifest_rows(manifest) == registry_rows(COUNT_BACKBONE, COUNT_CLASSES)


def test_meta_counts_equal_cpu_counts_on_test_vit(monkeypatch: pytest.MonkeyPatch) -> None:
    from methods import list_methods

    names = list_methods()  # the available ones
    fpt = "fpt-plus"
    # FPT+ is counted at its own input size (its frozen model at high resolution), not the native
    own = method_img_size(fpt, {}, requested=None, backbone="test_vit", data_size=None)
    assert fpt in names and own != default_img_size("test_vit")
    built_on: dict[str, str] = {}

    def spy(build):  # the device each method's count was built on
        adapted = weightless(build)
        built_on[build.args[1]] = next(adapted[0].parameters()).device.type
        return adapted

    monkeypatch.setattr(method_counts, "weightless", spy)
    meta = method_counts.trainable_counts(names, backbone="test_vit", num_classes=7)
    monkeypatch.setattr(method_counts, "weightless", lambda build: build())  # all on the CPU
    cpu = method_counts.trainable_counts(names, backbone="test_vit", num_classes=7)
    assert meta == cpu
    assert "paper's formula" in meta[fpt]
    # the meta device is the rule; the CPU only for the few methods that need values to build
    # (and for every one on a timm whose ViT cannot build on meta: weightless falls back)
    if built_on["full"] == "meta":
        assert built_on[fpt] == built_on["lora"] == built_on["vpt"] == "meta"
        assert sum(d == "meta" for d in built_on.values()) >= len(names) - 3


def test_the_table_shows_aliases_and_whole_paper_urls(manifest: dict) -> None:
    res = CliRunner().invoke(app, ["list", "methods"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "fpt-plus (fpt)" in res.output
    for entry in manifest["methods"]:
        assert entry["paper"] in res.output, entry["paper"]
