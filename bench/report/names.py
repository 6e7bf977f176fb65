"""Names of the report's blocks: their titles, and slugs of them for file names and anchors."""

from __future__ import annotations

import hashlib
import re

# File names stop at 255 bytes; a block title (dataset, backbone, shots) can be longer.
_SLUG_MAX = 96


def block_title(dataset: str, shots_key: int, backbone: str | None = None) -> str:
    """`"{dataset}"` or `"{dataset} {k}-shot"`, plus `" · {backbone}"` when given."""
    name = f"{dataset} {int(shots_key)}-shot" if shots_key else str(dataset)
    return f"{name} · {backbone}" if backbone else name


def slug(text: str) -> str:
    """Lowercase, every run of non-alphanumerics (ASCII) becomes one "-": the figures' file
    names and the HTML anchors of a block title. A long one is cut and ends in a hash of the
    whole, so it stays a valid file name and distinct titles keep distinct slugs."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"
    if len(out) <= _SLUG_MAX:
        return out
    digest = hashlib.sha1(str(text).encode()).hexdigest()[:10]
    return f"{out[: _SLUG_MAX - 11].rstrip('-')}-{digest}"


def unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... when taken (names that slug alike, such as vit_b and
    vit-b, still get distinct, deterministic ones); the result is added to `taken`."""
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out
