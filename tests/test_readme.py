"""The README's examples (a method, a dataset card, a Slurm config) must work as printed."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import methods
from bench.config import parse_sets
from bench.grid import GridRequest, method_settings
from bench.launchers import launch_options
from methods import registry
from tests.conftest import tiny_vit

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_method_example_registers_and_trains(monkeypatch) -> None:
    block = re.search(r"```python\n(# methods/ln_tune\.py\n.*?)```", README.read_text(), re.S)
    assert block, "README lost its method example"
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    exec(compile(block.group(1), "README:ln_tune", "exec"), {})
    spec = methods.get_method("ln-tune")
    assert spec.hparams == {"final_norm": True}
    # `bench tune` searches what the example declares
    assert spec.space_for("adamw").axes["final_norm"] == (True, False)
    assert spec.space_for("adamw").lr == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)

    model = spec.build(tiny_vit(3), final_norm=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(
            f"blocks.{i}.{ln}.{w}"
            for i in range(2)
            for ln in ("norm1", "norm2")
            for w in ("weight", "bias")
        ),
        "head.weight",
        "head.bias",
    }
    torch.nn.functional.cross_entropy(
        model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])
    ).backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())

    req = GridRequest(methods=["ln-tune"], datasets=["demo"], seeds=[0], backbone="test_vit",
                      sets=parse_sets(["ln-tune.final_norm=false"]))  # fmt: skip
    assert method_settings("ln-tune", req)[1] == {"final_norm": False}


def test_readme_dataset_card_example_loads_and_checks(tmp_path, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    from bench.catalog import get_card
    from bench.data_check import check_dataset

    block = re.search(r"```toml\n# datasets/my-derm\.toml.*?\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its dataset card example"
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "my-derm.toml").write_text(block.group(1))
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    card = get_card("my-derm")
    assert (card.task, card.format, card.classes) == (
        "binary",
        "imagefolder",
        ("benign", "malignant"),
    )
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for cls in card.classes:
            for i in range(n):
                path = tmp_path / "data/my-derm" / split / cls / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    report = check_dataset(card, tmp_path / "data")
    assert report.sizes == {"train": 18, "val": 2, "test": 6}  # 10 % of each class carved
    assert report.protocol["val"]["carved_from"] == "train"


def test_readme_slurm_config_example_is_accepted(tmp_path) -> None:
    block = re.search(r"```toml\n(# slurm\.toml.*?)```", README.read_text(), re.S)
    assert block, "README lost its --slurm-config example"
    cfg = tmp_path / "slurm.toml"
    cfg.write_text(block.group(1))
    opts = launch_options("slurm", slurm_config=cfg, slurm_cluster="local")  # no sbatch here
    assert (opts.partition, opts.time_min, opts.max_concurrent) == ("gpu", 120, 8)
    assert opts.sbatch["slurm_account"] == "proj-42" and opts.sbatch["slurm_mem"] == "64G"
    assert opts.sbatch["slurm_setup"][0] == "module load cuda/12.1"
    assert opts.sbatch["slurm_additional_parameters"]["mail-type"] == "END"
