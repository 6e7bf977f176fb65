"""The values a method's hyperparameter may take, declared once in `@register(limits=...)`.

The registry checks them before a builder runs; the method manifest carries them as JSON, so the
command line refuses `--set lora.rank=0` or a bad `--space` value before importing torch. A bound
may name the backbone's shape (`at_most="depth"`, `multiple_of="patch"`, `divides="head_dim"`,
`below_half_of="img_size"`: bench.backbone_geometry), checked wherever that shape is known:
always on the built model, before torch when the backbone is demo-vit or a timm ViT of the
version `timm_layouts.json` was written for. A bound may also name another hyperparameter of the
method (`same_as="side_reduction"`). Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import UserError

Geometry = Mapping[str, int]  # bench.backbone_geometry: "depth", "patch", "head_dim", "img_size"
# How a message names each geometry key.
_SHAPE = {
    "depth": "the backbone's depth",
    "patch": "the backbone's patch size",
    "head_dim": "the backbone's head width",
    "img_size": "the input size",
}


def _show(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Number:
    """A finite number between `low` and `high` (None: unbounded; `*_open`: the bound itself is
    excluded), a whole one if `integer` (an even one if `even`), or one of the values `also`
    allows besides. `note` says what a special value means ("0 = the embedding width").
    `at_most`, `multiple_of`, `divides` and `below_half_of` name a key of the backbone's geometry
    ("depth", "patch", "head_dim", "img_size"); they are checked when the geometry is given.
    `same_as` names another hyperparameter the value must equal (unless `also` allows it),
    checked when the method's other values are given."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    even: bool = False
    also: tuple[float, ...] = ()
    note: str = ""
    at_most: str = ""
    multiple_of: str = ""
    divides: str = ""
    below_half_of: str = ""
    same_as: str = ""

    def describe(
        self, geometry: Geometry | None = None, others: Mapping[str, Any] | None = None
    ) -> str:
        kind = ("an even integer" if self.even else "an integer") if self.integer else "a number"
        if others and self.same_as in others:
            text = f"equal to {self.same_as} ({others[self.same_as]!r})"
        elif self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{kind} in {left}{_show(self.low)}, {_show(self.high)}{right}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_show(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {_show(self.high)}"
        else:
            text = kind
        geometry = geometry or {}
        if self.at_most in geometry:
            text += f" and at most {_SHAPE[self.at_most]} {geometry[self.at_most]}"
        if self.multiple_of in geometry:
            text += f", a multiple of {_SHAPE[self.multiple_of]} {geometry[self.multiple_of]}"
        if self.divides in geometry:
            text += f" that divides {_SHAPE[self.divides]} {geometry[self.divides]}"
        if self.below_half_of in geometry:
            text += f" and below half {_SHAPE[self.below_half_of]} {geometry[self.below_half_of]}"
        if self.also:
            text = " or ".join([*(_show(v) for v in self.also), text])
        return f"{text} ({self.note})" if self.note else text

    def allows(
        self, value: Any, geometry: Geometry | None = None, others: Mapping[str, Any] | None = None
    ) -> bool:
        # bool is an int to Python, never a count or a rate here
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if others and self.same_as in others and value != others[self.same_as]:
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value) or (self.even and value % 2):
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        if self.high is not None and not (
            value < self.high if self.high_open else value <= self.high
        ):
            return False
        geometry = geometry or {}
        if self.at_most in geometry and value > geometry[self.at_most]:
            return False
        if self.multiple_of in geometry and value % geometry[self.multiple_of]:
            return False
        if self.below_half_of in geometry and not 2 * value < geometry[self.below_half_of]:
            return False
        return self.divides not in geometry or (value > 0 and geometry[self.divides] % value == 0)


@dataclass(frozen=True)
class OneOf:
    """One of a few named choices."""

    choices: tuple[str, ...]

    def describe(self, geometry: Geometry | None = None, others: Any = None) -> str:
        return f"one of {', '.join(self.choices)}"

    def allows(self, value: Any, geometry: Geometry | None = None, others: Any = None) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Names:
    """Comma-separated names from `vocabulary` (none at all only if `empty`). `apart`: two groups
    of names that cannot be given together, `why` says why."""

    vocabulary: tuple[str, ...]
    empty: bool = False
    apart: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    why: str = ""

    def describe(self, geometry: Geometry | None = None, others: Any = None) -> str:
        many = f"comma-separated names from {', '.join(self.vocabulary)}"
        return f"{many} (or none)" if self.empty else many

    def allows(self, value: Any, geometry: Geometry | None = None, others: Any = None) -> bool:
        return self.problem(value) is None

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value`, or None."""
        if not isinstance(value, str):
            return f"must be {self.describe()}, got {value!r}"
        names = [t.strip() for t in value.split(",") if t.strip()]
        unknown = [t for t in names if t not in self.vocabulary]
        if unknown:
            return (
                f"has unknown name(s) {', '.join(unknown)}; choose comma-separated names from "
                f"{', '.join(self.vocabulary)}"
            )
        if not names and not self.empty:
            return f"is empty; choose from {', '.join(self.vocabulary)}"
        if self.apart:
            first, second = ([t for t in names if t in group] for group in self.apart)
            if first and second:
                return f"cannot combine {', '.join(first)} with {', '.join(second)}: {self.why}"
        return None


Limit = Number | OneOf | Names


def whole(
    low: int = 1, *, even: bool = False, also: tuple[int, ...] = (), note: str = ""
) -> Number:
    """An integer >= `low` (a count, a size)."""
    return Number(low=low, integer=True, even=even, also=also, note=note)


def positive() -> Number:
    """A finite number > 0 (a scale, a temperature)."""
    return Number(low=0, low_open=True)


def non_negative() -> Number:
    """A finite number >= 0 (an init std)."""
    return Number(low=0)


def fraction(*, include_one: bool = False) -> Number:
    """A share in [0, 1) (a dropout rate), or [0, 1] with `include_one`."""
    return Number(low=0, high=1, high_open=not include_one)


def problem(
    limit: Limit,
    value: Any,
    geometry: Geometry | None = None,
    others: Mapping[str, Any] | None = None,
) -> str | None:
    """What is wrong with `value` under `limit` ("must be an integer >= 1, got 0"), or None;
    `geometry`: the backbone's shape, `others`: the method's other values, when known."""
    if isinstance(limit, Names):
        return limit.problem(value)
    if limit.allows(value, geometry, others):
        return None
    return f"must be {limit.describe(geometry, others)}, got {value!r}"


def first_problem(
    limits: Mapping[str, Limit],
    values: Mapping[str, Any],
    geometry: Geometry | None = None,
    others: Mapping[str, Any] | None = None,
) -> str | None:
    """ "KEY must be ..., got ..." for the first of `values` outside its limit, or None.
    `others`: the values a `same_as` bound reads (default: `values`)."""
    others = values if others is None else others
    for key, limit in limits.items():
        if key in values and (wrong := problem(limit, values[key], geometry, others)):
            return f"{key} {wrong}"
    return None


def check_values(
    method: str,
    limits: Mapping[str, Limit],
    values: Mapping[str, Any],
    geometry: Geometry | None = None,
) -> None:
    """Every value of `values` that has a limit, within it; a UserError names the first that is not."""
    if wrong := first_problem(limits, values, geometry):
        raise UserError(f"{method}.{wrong}")


def to_json(limit: Limit) -> dict[str, Any]:
    """The limit as JSON holds it (tuples as lists), named by its kind."""
    return {"kind": type(limit).__name__, **{k: _lists(v) for k, v in asdict(limit).items()}}


def from_json(data: Mapping[str, Any]) -> Limit:
    kind = _KINDS[data["kind"]]
    fields = {k: _tuples(v) for k, v in data.items() if k != "kind"}
    return kind(**fields)


def limits_from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, Limit]:
    return {key: from_json(value) for key, value in data.items()}


_KINDS: dict[str, type] = {"Number": Number, "OneOf": OneOf, "Names": Names}


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the limits hold (nested: `apart`)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
