"""--space METHOD.KEY=a,b,c read against a method's defaults: the rules `bench tune` resolves a
search space by (bench.tuning_plan) and the early check applies before the heavy imports
(bench.precheck), here once and torch-free."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from bench.config import coerce
from bench.errors import UserError
from bench.hparam_limits import Limit, problem


def canonical_spaces(
    spaces: Mapping[str, dict[str, str]], grid: list[str], canonical: Callable[[str], str]
) -> dict[str, dict[str, str]]:
    """--space values keyed by the canonical name of a method of the grid (an alias such as fpt
    names the method it stands for); `canonical` raises a KeyError saying what is wrong."""
    out: dict[str, dict[str, str]] = {}
    for name, values in spaces.items():
        try:
            method = canonical(name)
        except KeyError as exc:
            raise UserError(f"--space {name}.…: {exc.args[0]}") from None
        if method not in grid:
            raise UserError(f"--space {name}.…: not a method of this grid ({', '.join(grid)})")
        out.setdefault(method, {}).update(values)
    return out


def searched_values(
    method: str,
    overrides: Mapping[str, str],
    *,
    defaults: Mapping[str, Any],
    limits: Mapping[str, Limit],
    sets: Mapping[str, str],
    lr_pinned: bool,
) -> dict[str, tuple[Any, ...]]:
    """Each --space key's values, coerced to the type of its default and within its limit.
    `defaults`: the method's learning rate, weight decay and hyperparameters; `limits`: the
    values its hyperparameters may take; `sets`: its --set keys; `lr_pinned`: --lr was given."""
    axes: dict[str, tuple[Any, ...]] = {}
    for key, raw in overrides.items():
        if key == "optimizer":
            raise UserError(
                f"--space {method}.optimizer: the optimizer is not searched (its learning rates "
                f"differ in scale); fix it with --set {method}.optimizer=..."
            )
        if key not in defaults:
            valid = ", ".join(defaults)
            raise UserError(f"--space {method}.{key}: no such hyperparameter; valid: {valid}")
        if key in sets:
            raise UserError(
                f"{method}.{key} is both pinned (--set) and searched (--space); keep one"
            )
        values = [
            coerce(v.strip(), defaults[key], what=f"--space {method}.{key}") for v in raw.split(",")
        ]
        for value in values:
            if key in limits and (wrong := problem(limits[key], value)):
                raise UserError(f"--space {method}.{key}: each value {wrong}")
        axes[key] = tuple(dict.fromkeys(values))  # duplicates would only repeat trials
    if lr_pinned and "lr" in axes:
        raise UserError("--lr pins every method's learning rate; drop it or --space *.lr")
    check_rates(method, axes)
    return axes


def check_rates(method: str, axes: Mapping[str, tuple[Any, ...]]) -> None:
    """Every learning rate of a space > 0 and every weight decay >= 0, both finite."""
    for value in axes.get("lr", ()):
        if not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise UserError(f"{method}: every learning rate in the space must be > 0, got {value}")
    for value in axes.get("weight_decay", ()):
        if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
            raise UserError(f"{method}: every weight decay in the space must be >= 0, got {value}")


def declared_space(optimizer: str, declared_for: list[str], protocol_pins: list[str]) -> str | None:
    """The optimizer whose declared space a search uses: the one the method trains with; when a
    protocol pins the rate (EPT: 6e-4 for every method), the first declared, since only the
    method's own hyperparameters are searched and they do not depend on the optimizer."""
    if optimizer in declared_for:
        return optimizer
    return declared_for[0] if "lr" in protocol_pins and declared_for else None


def no_space(method: str, optimizer: str, declared_for: list[str]) -> UserError:
    """The error for a search of a method that declares no space for its optimizer."""
    have = ", ".join(declared_for) or "none"
    return UserError(
        f"{method} declares no search space for optimizer {optimizer} (declared for: {have});"
        f" give one with --space {method}.lr=A,B,C (and --space {method}.weight_decay=...)"
    )
