"""The method registry: `@register` records a builder and its defaults; `get_method` looks it up.

Shaped after timm's `register_model`: a method is a function `build(model, **hparams) -> nn.Module`
whose keyword-only arguments (with defaults) are its hyperparameters. `requires_grad` on the
returned module is the single record of what trains.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# The optimizers and training keys live with the other option values, which the command line
# checks before importing torch.
from bench.backbone_geometry import model_geometry
from bench.hparam_limits import Limit, first_problem, problem
from bench.option_values import LOOP_KEYS, OPTIMIZERS, TRAIN_KEYS
from methods.search import DEFAULT_SPACE_SOURCE, LrRule, SearchSpace, lr_around

Builder = Callable[..., nn.Module]
# (backbone native size, patch size, dataset image size or None, hyperparameters) -> input size
InputSizeRule = Callable[[int, int, "int | None", dict[str, Any]], int]
# A trained adapted model (a copy, changed in place) -> the same function in the backbone's layers
Merge = Callable[[nn.Module], nn.Module]

# The six methods of the product card, and the training-free k-NN baseline beside the linear
# probe, in the order tables show them.
CORE_METHODS: tuple[str, ...] = ("full", "linear", "knn", "vpt", "lora", "ept", "fpt")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its builder, hyperparameter defaults and training defaults."""

    name: str
    build: Builder
    hparams: dict[str, Any]
    optimizer: str
    lr: float
    weight_decay: float
    summary: str
    paper: str
    aliases: tuple[str, ...] = field(default=())
    # How the method picks its input resolution when --img-size is not given (None: the
    # backbone's native size). FPT+ uses it to run its frozen model at high resolution.
    input_size: InputSizeRule | None = None
    # The search space(s) `bench tune` uses, by optimizer: a space's lr grid is meaningless for
    # another optimizer (VPT's SGD rates would wreck AdamW).
    search: Mapping[str, SearchSpace] = field(default_factory=dict)
    # When set, `lr` is a base rate for this reference batch and the default scales with the
    # batch size (VPT's rule); None: `lr` is used as it is at any batch size.
    lr_rule: LrRule | None = None
    # How the method folds its trained tensors into the backbone's weights for deployment, so
    # inference costs what the backbone's does (LoRA's W + BA); None: its extra computation stays.
    merge: Merge | None = None
    # Why this install cannot build the method ("lokr needs peft >= …"); "" when it can. An
    # unavailable method stays registered, so `bench list` can say what it needs.
    unavailable: str = ""
    # Trains nothing (k-NN): the harness fills the model's memory instead of training it, so
    # there is no training step to profile. Its model says so too (`training_free`).
    training_free: bool = False
    # The values each hyperparameter may take (bench.hparam_limits), checked before `build` runs
    # and, through the method manifest, by the command line before torch is imported.
    limits: Mapping[str, Limit] = field(default_factory=dict)

    @property
    def train_defaults(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay}

    def default_lr(self, batch_size: int) -> float:
        """The default learning rate at this batch size (scaled by `lr_rule` when declared)."""
        return self.lr_rule.scale(self.lr, batch_size) if self.lr_rule else self.lr

    def space_for(self, optimizer: str) -> SearchSpace | None:
        return self.search.get(optimizer)

    @property
    def all_defaults(self) -> dict[str, Any]:
        return {**self.train_defaults, **self.hparams}


class MethodUnavailableError(KeyError):
    """A registered method this install cannot build; its message says what it needs. A KeyError,
    so every caller that turns an unknown name into a user error does the same for this one."""


_REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    lr: float,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    summary: str = "",
    paper: str = "",
    aliases: tuple[str, ...] = (),
    input_size: InputSizeRule | None = None,
    search: SearchSpace | Mapping[str, SearchSpace] | None = None,
    lr_rule: LrRule | None = None,
    merge: Merge | None = None,
    unavailable: str = "",
    training_free: bool = False,
    limits: Mapping[str, Limit] | None = None,
) -> Callable[[Builder], Builder]:
    """Register `build(model, *, hparam=default, ...)` under `name` with its training defaults
    and its search space (one SearchSpace for `optimizer`, or one per optimizer). Without one,
    `bench tune` searches the learning rate around the default (`lr_around`) and the weight
    decays every method shares. `merge` is given by a method whose trained tensors fold into the
    backbone's weights (see `MethodSpec.merge`). `unavailable` registers a method this install
    cannot build, with the reason `get_method` refuses it with. `limits`: the values each
    hyperparameter may take; the builder returned checks them before it runs, so it needs no
    copy of those checks, and every default and searched value must hold them."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"method {name!r}: optimizer must be one of {OPTIMIZERS}, not {optimizer!r}"
        )
    if search is None:
        search = SearchSpace.grid(lr_around(lr), source=DEFAULT_SPACE_SOURCE)
    spaces = dict(search) if isinstance(search, Mapping) else {optimizer: search}
    limits = dict(limits or {})
    if set(spaces) - set(OPTIMIZERS):
        raise ValueError(f"method {name!r}: search spaces are keyed by optimizer {OPTIMIZERS}")

    def decorator(fn: Builder) -> Builder:
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            params[0].POSITIONAL_ONLY,
            params[0].POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(f"method {name!r}: build must take the model as its first argument")
        hparams = {}
        for p in params[1:]:
            if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
                raise TypeError(
                    f"method {name!r}: hyperparameter {p.name!r} must be keyword-only with a default"
                )
            if p.name in TRAIN_KEYS:
                raise TypeError(
                    f"method {name!r}: {p.name!r} is a training key, declare it in @register"
                )
            if p.name in LOOP_KEYS:  # `--set METHOD.KEY` would reach the harness's, not this
                raise TypeError(
                    f"method {name!r}: {p.name!r} is a harness setting of every method; name "
                    "the hyperparameter otherwise"
                )
            hparams[p.name] = p.default
        for space in spaces.values():
            unknown = set(space.hparams) - set(hparams)
            empty = [k for k, values in space.axes.items() if not values]
            if unknown or empty:
                raise TypeError(
                    f"method {name!r}: search space names unknown hyperparameters "
                    f"{sorted(unknown)} or has empty grids {empty}"
                )
        _check_limits(name, limits, hparams, spaces)
        checked = _checked_builder(fn, limits, hparams)
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"method name {key!r} is registered twice")
        _REGISTRY[name] = MethodSpec(
            name=name,
            build=checked,
            hparams=hparams,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            summary=summary or (inspect.getdoc(fn) or "").split("\n")[0],
            paper=paper,
            aliases=aliases,
            input_size=input_size,
            search=spaces,
            lr_rule=lr_rule,
            merge=merge,
            unavailable=unavailable,
            training_free=training_free,
            limits=limits,
        )
        _ALIASES.update({alias: name for alias in aliases})
        return checked

    return decorator


def _check_limits(
    name: str,
    limits: Mapping[str, Limit],
    hparams: Mapping[str, Any],
    spaces: Mapping[str, SearchSpace],
) -> None:
    """A method's limits name its hyperparameters, and its defaults and searched values hold them."""
    unknown = sorted(set(limits) - set(hparams))
    if unknown:
        raise TypeError(f"method {name!r}: limits name unknown hyperparameters {unknown}")
    for key, limit in limits.items():
        values = [hparams[key], *(v for s in spaces.values() for v in s.axes.get(key, ()))]
        for value in values:
            if wrong := problem(limit, value, others=hparams):
                raise TypeError(f"method {name!r}: default or searched {key} {wrong}")


def _checked_builder(
    fn: Builder, limits: Mapping[str, Limit], defaults: Mapping[str, Any]
) -> Builder:
    """`fn` that first checks its keyword arguments against `limits`, on the model's geometry
    and with `defaults` for the knobs not given (ValueError names the first out of bounds),
    keeping its name, docstring and signature."""
    if not limits:
        return fn

    @functools.wraps(fn)
    def build(model: nn.Module, **hparams: Any) -> nn.Module:
        others = {**defaults, **hparams}
        if wrong := first_problem(limits, hparams, model_geometry(model), others):
            raise ValueError(wrong)
        return fn(model, **hparams)

    return build


def keyword_builder(name: str, defaults: Mapping[str, Any], build: Builder) -> Builder:
    """`build(model, **hparams)` as a method builder whose keyword-only hyperparameters are
    `defaults`, in order (the signature `@register` reads): a missing one takes its default, an
    unknown one is a TypeError. For builders generated from a table rather than written out."""

    def builder(model: nn.Module, **hparams: Any) -> nn.Module:
        unknown = set(hparams) - set(defaults)
        if unknown:
            raise TypeError(f"{name}: unknown hyperparameter(s) {sorted(unknown)}")
        return build(model, **{**defaults, **hparams})

    model = inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    knobs = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in defaults.items()
    ]
    builder.__signature__ = inspect.Signature([model, *knobs])
    builder.__name__ = builder.__qualname__ = f"build_{name}"
    return builder


def get_method(name: str, *, include_unavailable: bool = False) -> MethodSpec:
    """Look a method up by name or alias; an unknown name raises KeyError listing the known ones,
    an unavailable one MethodUnavailableError with its reason (unless `include_unavailable`)."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    spec = _REGISTRY[key]
    if spec.unavailable and not include_unavailable:
        raise MethodUnavailableError(spec.unavailable)
    return spec


def list_methods(*, include_unavailable: bool = False) -> list[str]:
    """Registered method names, core methods first in card order, then the rest alphabetically;
    those this install cannot build only with `include_unavailable`."""
    core = [m for m in CORE_METHODS if m in _REGISTRY or m in _ALIASES]
    core = [_ALIASES.get(m, m) for m in core]
    names = core + sorted(set(_REGISTRY) - set(core))
    return [m for m in names if include_unavailable or not _REGISTRY[m].unavailable]
