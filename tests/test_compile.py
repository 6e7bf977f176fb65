"""`--compile` and `--precision`: torch.compile on the forward the harness calls, with the same
numbers as eager and the compile time kept apart; precision resolved and refused before any
training."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from bench.errors import UserError
from bench.grid import resolve_precision
from bench.harness import compile_forward
from bench.measure import StepTimer


def tiny() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, num_classes=3, embed_dim=48, depth=2,
                             num_heads=3)  # fmt: skip


@pytest.mark.slow
def test_compiled_forward_matches_eager_and_keeps_names() -> None:
    eager, compiled = tiny(), tiny()
    compile_forward(compiled)
    x = torch.randn(4, 3, 32, 32)
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
    # a training step through the compiled forward gives the eager gradients
    compiled(x).sum().backward()
    eager(x).sum().backward()
    for (n, a), (_, b) in zip(compiled.named_parameters(), eager.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_first_step_excess_is_the_one_off_cost() -> None:
    t = StepTimer("cpu", warmup=1)
    t._times, t._sizes = [5.0, 1.0, 1.2, 0.8], [4] * 4
    assert t.first_step_excess_s() == pytest.approx(4.0)
    t._times = [1.0]
    assert t.first_step_excess_s() == 0.0


def test_precision_defaults_and_refusals(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU's: test_precision.py
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(UserError, match="on CPU use fp32"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(UserError, match="must be one of auto, bf16, fp16, fp32, not 'fp8'"):
        resolve_precision("fp8", "cuda")


def test_run_refuses_bf16_on_cpu_before_training(tmp_path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(app, ["run", "--device", "cpu", "--precision", "bf16",
                                   "--results", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and "on CPU use fp32" in res.output
    assert not list(tmp_path.glob("*.json"))
