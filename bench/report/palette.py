"""One colour and marker per method name, the same in every figure of every report.

The report never imports the methods (that would import torch), so the registered methods'
order is pinned here; tests/test_palette.py fails when the registry gains a method that is not
listed. New methods go at the end, so no earlier method's style ever moves.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Okabe & Ito's colour-blind-safe palette without its yellow (unreadable on white), then three
# darker hues of Paul Tol's that stay apart from them; ordered so that methods next to each
# other in the registry differ most. Beyond ten, the marker tells methods of one colour apart.
COLORS: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#882255",  # wine
    "#999933",  # olive
    "#332288",  # indigo
)
# One marker per round of colours: (colour, marker) is unique over len(COLORS) * len(MARKERS).
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
# A method's variants (tuned rows, other settings): its colour, hollow, with one of these.
VARIANT_MARKERS: tuple[str, ...] = ("p", "h", "*", "<", ">")

# `methods.list_methods()` when this was written; append, never reorder.
REGISTERED: tuple[str, ...] = (
    "full", "linear", "vpt", "lora", "ept", "fpt-plus", "adapter", "bitfit", "boft", "c3a",
    "delora", "dora", "fourierft", "fpt-v1", "hra", "ia3", "ln_tuning", "loha", "lokr", "miss",
    "mlp-head", "oft", "partial", "randlora", "road", "shira", "ssf", "vera", "vfpt", "vp",
    "vpt-shallow", "waveft", "knn",
)  # fmt: skip
# Registry aliases older records may carry.
ALIASES: dict[str, str] = {"fpt": "fpt-plus"}

_SLOTS = len(COLORS) * len(MARKERS)
# A tuned row (`tuning.tuned_label`), a search's trials, or one of several settings (`[hash]`).
_VARIANT = re.compile(r"^(?P<base>.+?)(?P<variant> \((?:tuned|search trials)[^)]*\)| \[[^\]]+\])+$")


@dataclass(frozen=True)
class Style:
    """How a method is drawn: colour, marker, whether the marker is filled, line style."""

    color: str
    marker: str
    filled: bool = True
    linestyle: str = "-"

    @property
    def facecolor(self) -> str:
        return self.color if self.filled else "white"


def _digest(text: str) -> int:
    """A hash that is the same in every process (Python's `hash` of a str is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _slot(method: str) -> int:
    """Registered methods take slots in registry order; other names (plugins) hash onto the
    slots the registered ones leave free, so they never look like a built-in method."""
    name = ALIASES.get(method, method)
    if name in REGISTERED:
        return REGISTERED.index(name)
    free = _SLOTS - len(REGISTERED)
    return len(REGISTERED) + _digest(name) % free


def split_variant(name: str) -> tuple[str, str]:
    """("lora", " (tuned, budget 8)") for a tuned row name; (name, "") for a plain method."""
    match = _VARIANT.match(name)
    return (match["base"], name[len(match["base"]) :]) if match else (name, "")


def method_style(name: str) -> Style:
    """The style of a method, or of a row named after one (`lora (tuned, budget 8)`,
    `lora [1a2b3c4d]`): the base method's colour, hollow, with another marker and dashes."""
    base, variant = split_variant(str(name))
    slot = _slot(base)
    color = COLORS[slot % len(COLORS)]
    if not variant:
        return Style(color, MARKERS[slot // len(COLORS) % len(MARKERS)])
    marker = VARIANT_MARKERS[_digest(variant) % len(VARIANT_MARKERS)]
    return Style(color, marker, filled=False, linestyle="--")
