"""Which records a report covers: `bench report --datasets/--methods/--backbone/--where`.

Filters act on the records' own `config` (what the cell was run with) and `status`, so any
setting a record carries can select it, hyperparameters included (`--where hparams.rank=8`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError

# Words that mean "no value" on the command line; `shots=full` selects full-data runs.
_NONE_WORDS = frozenset({"none", "null", "full"})
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class Condition:
    """`key=v1,v2` (any of the values) or `key!=v1,v2` (none of them)."""

    key: str
    values: tuple[str, ...]
    negate: bool = False

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{','.join(self.values)}"


def parse_where(items: Iterable[str]) -> list[Condition]:
    """`--where` items into conditions; a malformed one raises UserError saying the form."""
    out = []
    for item in items:
        negate = "!=" in item
        key, sep, raw = item.partition("!=" if negate else "=")
        key, values = key.strip(), tuple(v.strip() for v in raw.split(",") if v.strip())
        if not sep or not key or not values:
            raise UserError(
                f"--where {item!r}: expected KEY=VALUE or KEY!=VALUE (several values: "
                "KEY=a,b), e.g. --where shots=5 --where hparams.rank=8"
            )
        out.append(Condition(key, values, negate))
    return out


def flat_config(record: dict[str, Any]) -> dict[str, Any]:
    """A record's config with nested dicts as dotted keys (`hparams.rank`), plus `status`."""
    out: dict[str, Any] = {"status": record.get("status")}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", record.get("config") or {})
    return out


def _matches(actual: Any, wanted: str) -> bool:
    """Compare a record value with a command-line word by the record value's type."""
    w = wanted.lower()
    if actual is None:
        return w in _NONE_WORDS
    if isinstance(actual, bool):
        return (w in _TRUE) if actual else (w in _FALSE)
    if isinstance(actual, (int, float)):
        try:
            return math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(actual) == wanted


def select_records(
    records: list[dict[str, Any]],
    *,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    backbones: list[str] | None = None,
    where: list[Condition] | None = None,
) -> list[dict[str, Any]]:
    """The records every filter admits. A `--where` key that no record has raises UserError
    naming the keys there are, so a typo never silently empties a report."""
    conditions = list(where or [])
    for name, values in (("dataset", datasets), ("method", methods), ("backbone", backbones)):
        if values:
            conditions.append(Condition(name, tuple(values)))
    if not conditions:
        return list(records)
    flats = [flat_config(r) for r in records]
    known = set().union(*flats) if flats else set()
    for cond in conditions:
        if flats and cond.key not in known:
            raise UserError(
                f"--where {cond}: no record has the key {cond.key!r}; keys: "
                + ", ".join(sorted(known))
            )
    out = []
    for rec, flat in zip(records, flats, strict=True):
        keep = True
        for cond in conditions:
            hit = cond.key in flat and any(_matches(flat[cond.key], v) for v in cond.values)
            if hit == cond.negate:
                keep = False
                break
        if keep:
            out.append(rec)
    return out
