"""Declared hyperparameter limits: what each kind allows and says, that every method declares one
for every knob a user can set wrongly, and that the registry checks them before a builder runs."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

import methods
from bench.errors import UserError
from bench.hparam_limits import (
    Names,
    Number,
    OneOf,
    check_values,
    fraction,
    from_json,
    non_negative,
    positive,
    problem,
    to_json,
    whole,
)
from bench.method_manifest import load_manifest
from methods import registry
from methods.search import SearchSpace
from tests.conftest import tiny_vit

# (limit, allowed values, refused values, what it says it wants)
CASES = [
    (whole(1), [1, 7, 10**9], [0, -1, 2.5, 2.0, True, "3", None], "an integer >= 1"),
    (whole(0, note="0 = auto"), [0, 4], [-1], "an integer >= 0 (0 = auto)"),
    (whole(2, even=True), [2, 64], [3, 0, 1], "an even integer >= 2"),
    (whole(1, also=(-1,)), [-1, 1, 5], [0, -2], "-1 or an integer >= 1"),
    (positive(), [1e-9, 3, 150.0], [0, 0.0, -1.0, math.inf, math.nan, False], "a number > 0"),
    (non_negative(), [0, 0.0, 0.02], [-1e-9, math.inf, math.nan], "a number >= 0"),
    (fraction(), [0, 0.0, 0.5, 0.999], [1, 1.0, -0.1, math.nan], "a number in [0, 1)"),
    (fraction(include_one=True), [0.0, 1.0], [1.01], "a number in [0, 1]"),
    (Number(low=0, high=1, low_open=True), [1, 0.2], [0, 0.0], "a number in (0, 1]"),
    (OneOf(("global", "cls")), ["global", "cls"], ["Global", "", 1], "one of global, cls"),
]


@pytest.mark.parametrize(("limit", "good", "bad", "says"), CASES)
def test_each_kind_allows_what_it_says(limit, good, bad, says) -> None:
    assert limit.describe() == says
    for value in good:
        assert problem(limit, value) is None, value
    for value in bad:
        assert problem(limit, value) == f"must be {says}, got {value!r}", value


def test_geometry_bounds_apply_where_the_shape_is_known() -> None:
    blocks = Number(low=1, integer=True, at_most="depth")
    side = Number(low=0, integer=True, multiple_of="patch", note="0 = default")
    assert problem(blocks, 99) is None  # no geometry: not judged
    assert problem(blocks, 12, {"depth": 12, "patch": 16}) is None
    assert problem(blocks, 13, {"depth": 12}) == (
        "must be an integer >= 1 and at most the backbone's depth 12, got 13"
    )
    assert problem(side, 0, {"patch": 16}) is None and problem(side, 128, {"patch": 16}) is None
    reduction = Number(low=1, integer=True, divides="head_dim")
    assert [r for r in range(1, 20) if problem(reduction, r, {"head_dim": 16}) is None] == [
        1,
        2,
        4,
        8,
        16,
    ]
    assert problem(reduction, 3, {"head_dim": 64}) == (
        "must be an integer >= 1 that divides the backbone's head width 64, got 3"
    )
    assert problem(side, 120, {"patch": 16}) == (
        "must be an integer >= 0, a multiple of the backbone's patch size 16 (0 = default), got 120"
    )


def test_a_bound_may_be_half_the_input_size() -> None:
    pad = Number(low=0, integer=True, below_half_of="img_size", note="0 = default")
    assert problem(pad, 31, {"img_size": 64}) is None and problem(pad, 100) is None
    assert problem(pad, 32, {"img_size": 64}) == (
        "must be an integer >= 0 and below half the input size 64 (0 = default), got 32"
    )


def test_a_bound_may_be_another_knobs_value() -> None:
    reduction = Number(low=1, integer=True, same_as="side", also=(1,))
    assert problem(reduction, 1, others={"side": 8}) is None
    assert problem(reduction, 8, others={"side": 8}) is None
    assert problem(reduction, 4) is None  # the other knob unknown: not judged
    assert problem(reduction, 4, others={"side": 8}) == "must be 1 or equal to side (8), got 4"
    assert problem(reduction, 0) == "must be 1 or an integer >= 1, got 0"


def test_a_builder_compares_a_knob_with_the_default_of_one_not_given() -> None:
    build = methods.get_method("fpt-v1").build  # side_reduction defaults to 8
    with pytest.raises(ValueError, match=r"^prompt_reduction must be 1 or equal to side_reduction"):
        build(tiny_vit(3), prompt_reduction=4)
    assert build(tiny_vit(3), prompt_reduction=4, side_reduction=4).settings["prompt_dim"] == 8


def test_a_builder_checks_the_geometry_of_the_model_it_is_given() -> None:
    build = methods.get_method("partial").build
    with pytest.raises(
        ValueError, match=r"^blocks must be .* at most the backbone's depth 2, got 3$"
    ):
        build(tiny_vit(3, depth=2), blocks=3)
    build(tiny_vit(3, depth=2), blocks=2)
    with pytest.raises(ValueError, match=r"side_size must be .* patch size 16"):
        methods.get_method("fpt").build(tiny_vit(3), side_size=12)


def test_names_refuse_unknown_empty_and_mixed_groups() -> None:
    names = Names(("q", "v", "qkv", "all"), apart=(("q", "v"), ("qkv", "all")), why="split or not")
    assert problem(names, "q, v") is None
    assert problem(names, "qkv,all") is None
    assert problem(names, "q,x,y") == "has unknown name(s) x, y; choose comma-separated names " \
        "from q, v, qkv, all"  # fmt: skip
    assert problem(names, " , ") == "is empty; choose from q, v, qkv, all"
    assert problem(names, "v,all,q") == "cannot combine v, q with all: split or not"
    assert problem(names, 3) == "must be comma-separated names from q, v, qkv, all, got 3"
    assert problem(Names(("fc2",), empty=True), "") is None


def test_check_values_names_the_method_and_key_and_skips_the_rest() -> None:
    limits = {"rank": whole(1), "targets": Names(("qkv",))}
    check_values("lora", limits, {"rank": 8, "targets": "qkv", "alpha": -1.0})  # alpha: no limit
    with pytest.raises(UserError, match=r"^lora\.rank must be an integer >= 1, got 0$"):
        check_values("lora", limits, {"rank": 0})


def test_every_settable_hyperparameter_of_every_method_has_a_limit() -> None:
    # a knob without one would reach its builder unchecked, after the heavy imports
    missing = [
        f"{name}.{key}"
        for name in methods.list_methods(include_unavailable=True)
        for key, default in methods.get_method(name, include_unavailable=True).hparams.items()
        if not isinstance(default, bool)
        and key not in methods.get_method(name, include_unavailable=True).limits
    ]
    assert missing == []


def test_the_manifest_carries_every_limit_as_the_registry_holds_it() -> None:
    manifest = load_manifest()
    assert manifest is not None, "stale: regenerate it with `python -m bench.method_manifest`"
    for entry in manifest["methods"]:
        spec = methods.get_method(entry["name"], include_unavailable=True)
        assert {k: from_json(v) for k, v in entry["limits"].items()} == dict(spec.limits)
        for limit in spec.limits.values():
            assert from_json(to_json(limit)) == limit


def test_the_registry_checks_before_the_builder_touches_the_model() -> None:
    model = tiny_vit(3)
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match=r"^prompt_length must be an integer >= 1, got 0$"):
        methods.get_method("vpt").build(model, prompt_length=0)
    with pytest.raises(ValueError, match="cannot combine q with qkv"):
        methods.get_method("lora").build(model, targets="qkv,q")
    assert {n: type(m) for n, m in model.named_modules()} == before


def _register(name: str, **kwargs):
    def build(model: nn.Module, *, width: int = 4) -> nn.Module:
        return model

    try:
        return registry.register(name, lr=1e-3, **kwargs)(build)
    finally:
        registry._REGISTRY.pop(name, None)


def test_the_registry_refuses_limits_its_method_breaks() -> None:
    with pytest.raises(TypeError, match=r"limits name unknown hyperparameters \['depth'\]"):
        _register("limits-unknown", limits={"depth": whole(1)})
    with pytest.raises(TypeError, match="default or searched width must be an integer >= 8"):
        _register("limits-default", limits={"width": whole(8)})
    space = SearchSpace.grid(lr=(1e-3,), hparams={"width": (4, 0)}, source="t")
    with pytest.raises(TypeError, match="default or searched width must be an integer >= 1, got 0"):
        _register("limits-space", limits={"width": whole(1)}, search=space)


def test_a_checked_builder_keeps_its_signature_and_passes_good_values() -> None:
    spec = methods.get_method("knn")
    assert list(inspect.signature(spec.build).parameters) == ["model", "k", "temperature"]
    model = spec.build(tiny_vit(3), k=1, temperature=1.0)
    assert model.k == 1
    assert isinstance(model, torch.nn.Module)
