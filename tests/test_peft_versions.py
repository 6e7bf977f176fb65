"""An older peft than the newest tuners need: `import methods` still works, those tuners are listed
unavailable with the peft they need, and asking for one fails before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import peft
import pytest
import torch
from packaging.version import Version
from typer.testing import CliRunner

import methods
from bench.cli import app
from methods import registry
from methods.peft_inject import PEFT_FLOOR, register_tuners
from methods.peft_tuners import TUNERS
from methods.registry import MethodUnavailableError
from tests.conftest import tiny_vit

NEWER = ("delora", "road", "waveft")  # first in peft 0.18.0
NEWER_CONFIGS = ("DeloraConfig", "RoadConfig", "WaveFTConfig")

# The tests below that fake an older peft do it by hiding config classes of the installed one, so
# they need an installed peft that has them all (CI's oldest-dependency job runs peft 0.7.0).
needs_newest_peft = pytest.mark.skipif(
    Version(peft.__version__) < Version("0.18.0"),
    reason=f"fakes older pefts from the installed one's configs; peft {peft.__version__} lacks some",
)


def fake_peft(version: str, missing: tuple[str, ...] = ()) -> SimpleNamespace:
    """The installed peft's config classes, less `missing`, claiming to be `version`."""
    configs = {n: getattr(peft, n) for n in dir(peft) if n.endswith("Config") and n not in missing}
    return SimpleNamespace(__version__=version, **configs)


def register_with(monkeypatch: pytest.MonkeyPatch, peft_module: SimpleNamespace) -> None:
    """The registry as `import methods` leaves it when `peft_module` is the installed peft."""
    rows = {row.name for row in TUNERS}
    others = {k: v for k, v in registry._REGISTRY.items() if k not in rows}
    monkeypatch.setattr(registry, "_REGISTRY", others)
    register_tuners(TUNERS, peft_module)


@pytest.fixture
def peft_0_17(monkeypatch: pytest.MonkeyPatch) -> None:
    register_with(monkeypatch, fake_peft("0.17.1", missing=NEWER_CONFIGS))


def needs(name: str, version: str, installed: str) -> str:
    return (
        f"{name} needs peft >= {version}; installed {installed}: pip install -U 'peft>={version}'"
    )


@needs_newest_peft
def test_missing_tuners_are_listed_unavailable_with_the_peft_they_need(peft_0_17) -> None:
    available = methods.list_methods()
    assert not set(NEWER) & set(available)
    assert {"lora", "shira", "miss", "c3a"} <= set(available)  # 0.17.0 and older: still there
    assert set(methods.list_methods(include_unavailable=True)) - set(available) == set(NEWER)
    for name in NEWER:
        spec = methods.get_method(name, include_unavailable=True)
        assert spec.unavailable == needs(name, "0.18.0", "0.17.1")


@needs_newest_peft
def test_get_method_refuses_an_unavailable_tuner_with_its_reason(peft_0_17) -> None:
    with pytest.raises(MethodUnavailableError) as exc:
        methods.get_method("road")
    assert exc.value.args[0] == needs("road", "0.18.0", "0.17.1")


def test_available_tuners_still_build_and_train(peft_0_17) -> None:
    spec = methods.get_method("lora")
    model = spec.build(tiny_vit(), **spec.hparams)
    loss = model(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)


@needs_newest_peft
def test_an_old_config_class_is_not_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """peft 0.15 has OFTConfig, but stores whole rotation blocks: the row needs 0.16.0."""
    register_with(monkeypatch, fake_peft("0.15.2"))
    assert methods.get_method("oft", include_unavailable=True).unavailable == needs(
        "oft", "0.16.0", "0.15.2"
    )
    assert "hra" in methods.list_methods()


@needs_newest_peft
def test_a_dev_build_of_the_needed_release_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    register_with(monkeypatch, fake_peft("0.18.0.dev0"))
    assert set(NEWER) <= set(methods.list_methods())


@needs_newest_peft
def test_cli_lists_them_and_run_refuses_them_before_training(peft_0_17, tmp_path: Path) -> None:
    runner = CliRunner()
    # wide enough that no row wraps, so each method is one line
    listed = runner.invoke(
        app, ["list", "methods", "--backbone", "test_vit"], env={"COLUMNS": "900"}
    )
    assert listed.exit_code == 0, listed.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.output.splitlines()]
    rows = {row[0]: row for row in cells if row}  # name, core, optimizer, lr, wd, trainable, ...
    assert rows["road"][5] == "unavailable"
    assert rows["road"][7].startswith("UNAVAILABLE: " + needs("road", "0.18.0", "0.17.1"))
    assert rows["lora"][5].endswith("%)")  # a count, as before

    results = tmp_path / "r"
    argv = ["run", "--methods", "lora,road", "--datasets", "demo", "--backbone", "test_vit",
            "--no-pretrained", "--results", str(results), "--no-progress"]  # fmt: skip
    res = runner.invoke(app, argv)
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: " + needs("road", "0.18.0", "0.17.1")
    assert not results.exists()


@needs_newest_peft
def test_import_methods_on_a_peft_without_the_newer_tuners() -> None:
    """The real import path: peft lacks the 0.18 configs before `import methods` runs."""
    hide = "; ".join(f"delattr(peft, {n!r})" for n in NEWER_CONFIGS)
    code = (
        f"import peft; {hide}; peft.__version__ = '0.17.1'; import methods; "
        "print(sorted(set(methods.list_methods(include_unavailable=True)) - "
        "set(methods.list_methods())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(NEWER))


def test_the_installed_peft_decides_which_tuners_are_unavailable() -> None:
    """Whatever peft is installed (the newest, or CI's oldest-dependency job's floor), a tuner is
    listed unavailable exactly when its row needs a newer peft, and every available one builds."""
    installed = Version(peft.__version__)
    unavailable = set(methods.list_methods(include_unavailable=True)) - set(methods.list_methods())
    assert unavailable == {row.name for row in TUNERS if Version(row.min_peft) > installed}
    for name in sorted({row.name for row in TUNERS} - unavailable):
        spec = methods.get_method(name)
        model = spec.build(tiny_vit(), **spec.hparams)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3), name


def test_pyproject_floor_is_the_one_the_code_declares() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"peft>={PEFT_FLOOR}" in deps
    assert all(Version(row.min_peft) >= Version(PEFT_FLOOR) for row in TUNERS)
