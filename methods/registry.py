"""The method registry: `@register` records a builder and its defaults; `get_method` looks it up.

Shaped after timm's `register_model`: a method is a function `build(model, **hparams) -> nn.Module`
whose keyword-only arguments (with defaults) are its hyperparameters. `requires_grad` on the
returned module is the single record of what trains.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]
# (backbone native size, patch size, dataset image size or None, hyperparameters) -> input size
InputSizeRule = Callable[[int, int, "int | None", dict[str, Any]], int]

# The six methods of the product card, in the order tables show them.
CORE_METHODS: tuple[str, ...] = ("full", "linear", "vpt", "lora", "ept", "fpt")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
# Training hyperparameters every method declares; the rest come from the builder's signature.
TRAIN_KEYS: tuple[str, ...] = ("optimizer", "lr", "weight_decay")


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

    @property
    def train_defaults(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr, "weight_decay": self.weight_decay}

    @property
    def all_defaults(self) -> dict[str, Any]:
        return {**self.train_defaults, **self.hparams}


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
) -> Callable[[Builder], Builder]:
    """Register `build(model, *, hparam=default, ...)` under `name` with its training defaults."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"method {name!r}: optimizer must be one of {OPTIMIZERS}, not {optimizer!r}"
        )

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
            hparams[p.name] = p.default
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"method name {key!r} is registered twice")
        _REGISTRY[name] = MethodSpec(
            name=name,
            build=fn,
            hparams=hparams,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            summary=summary or (inspect.getdoc(fn) or "").split("\n")[0],
            paper=paper,
            aliases=aliases,
            input_size=input_size,
        )
        _ALIASES.update({alias: name for alias in aliases})
        return fn

    return decorator


def get_method(name: str) -> MethodSpec:
    """Look a method up by name or alias; an unknown name raises KeyError listing the known ones."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return _REGISTRY[key]


def list_methods() -> list[str]:
    """Registered method names, core methods first in card order, then the rest alphabetically."""
    core = [m for m in CORE_METHODS if m in _REGISTRY or m in _ALIASES]
    core = [_ALIASES.get(m, m) for m in core]
    return core + sorted(set(_REGISTRY) - set(core))
