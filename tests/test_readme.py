"""The README's "how to add a method" example must work as printed."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import methods
from bench.config import parse_sets
from bench.runner import RunRequest, method_settings
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

    req = RunRequest(methods=["ln-tune"], datasets=["demo"], seeds=[0], backbone="test_vit")
    req.sets = parse_sets(["ln-tune.final_norm=false"])
    assert method_settings("ln-tune", req)[1] == {"final_norm": False}
