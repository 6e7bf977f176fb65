"""The method contract, checked for every registered method (new methods are covered automatically)."""

from __future__ import annotations

import pytest
import torch

import methods
from bench.train import build_optimizer, set_train_mode
from bench.train_free import training_free
from tests.conftest import skip_if_unavailable, tiny_vit

# Every registered method; one the installed peft cannot build is skipped with what it needs.
ALL = methods.list_methods(include_unavailable=True)
NUM_CLASSES = 3


def adapted(name: str) -> torch.nn.Module:
    skip_if_unavailable(name)
    torch.manual_seed(0)
    spec = methods.get_method(name)
    return spec.build(tiny_vit(NUM_CLASSES), **spec.hparams)


@pytest.mark.parametrize("name", ALL)
def test_output_shape_and_finite(name: str) -> None:
    model = adapted(name)
    set_train_mode(model)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_exactly_the_trainable_tensors(name: str) -> None:
    model = adapted(name)
    set_train_mode(model)
    assert training_free(model) == methods.get_method(name).training_free
    if training_free(model):  # k-NN: nothing trains, and no gradient can flow
        assert not any(p.requires_grad for p in model.parameters())
        assert not model(torch.randn(4, 3, 32, 32)).requires_grad
        return
    loss = torch.nn.functional.cross_entropy(
        model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])
    )
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: trainable {pname} got no gradient"
        else:
            assert p.grad is None, f"{name}: frozen {pname} got a gradient"


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("name", ALL)
def test_step_leaves_frozen_tensors_bit_identical(name: str, optimizer: str) -> None:
    model = adapted(name)
    if training_free(model):
        pytest.skip(f"{name} trains nothing: no step to take")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = build_optimizer(model, optimizer, lr=0.1, weight_decay=0.1)
    set_train_mode(model)
    torch.nn.functional.cross_entropy(
        model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])
    ).backward()
    opt.step()
    after = dict(model.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(after[n], before), f"{name}: frozen {n} changed"
    assert any(not torch.equal(after[n], t) for n, t in trainable.items()), (
        f"{name}: nothing trained"
    )


@pytest.mark.parametrize("name", ALL)
def test_trainable_count_in_range(name: str) -> None:
    model = adapted(name)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if name == "full":
        assert trainable == total
    elif training_free(model):
        assert trainable == 0
    else:
        assert 0 < trainable < total


@pytest.mark.parametrize("name", ALL)
def test_frozen_submodules_stay_in_eval_mode(name: str) -> None:
    model = adapted(name)
    set_train_mode(model)
    for mname, module in model.named_modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            assert not module.training, f"{name}: frozen {mname or 'model'} is in train mode"
        elif any(p.requires_grad for p in module.parameters(recurse=False)):
            assert module.training, f"{name}: trainable {mname} is in eval mode"


def test_registry_rejects_bad_builders() -> None:
    with pytest.raises(TypeError, match="keyword-only"):

        @methods.register("bad-positional", lr=1.0)
        def _bad(model, rank=4):  # hyperparameters must be keyword-only
            return model

    with pytest.raises(ValueError, match="registered twice"):

        @methods.register("full", lr=1.0)
        def _dup(model):
            return model

    with pytest.raises(ValueError, match="optimizer"):
        methods.register("bad-opt", lr=1.0, optimizer="lion")


def test_unknown_method_lists_available() -> None:
    with pytest.raises(KeyError, match="available: full, linear"):
        methods.get_method("nope")


def test_core_methods_come_first() -> None:
    core = [m for m in methods.CORE_METHODS if m in ALL]
    assert ALL[: len(core)] == core
