"""--backbone, --weights and --no-pretrained checked without importing timm (which imports
torch): timm's model names are read from its installed source files, so a typo fails in a
second. bench.backbones.resolve_backbone runs these checks too, then the ones that need timm."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

from bench.backbone_config import hub_repo
from bench.errors import UserError
from bench.weights import DEMO_BACKBONE, check_weights_path

# timm registers every architecture as a function under `@register_model` (other decorators may
# follow it), and a renamed one as a key of `register_model_deprecations(__name__, {...})`.
_REGISTERED = re.compile(r"^@register_model\b[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", re.M)
_DEPRECATIONS = re.compile(r"register_model_deprecations\(\s*__name__\s*,\s*\{(.*?)\}\s*\)", re.S)
_KEY = re.compile(r"['\"](\w+)['\"]\s*:")
# Fewer names than this means the scan no longer understands timm's layout: trust timm instead.
_MIN_NAMES = 500


@functools.cache
def timm_source_names() -> tuple[frozenset[str], frozenset[str]] | None:
    """(architectures, deprecated names) of the installed timm, read from its source files
    without importing it; None when timm is not installed or its layout is not understood."""
    spec = importlib.util.find_spec("timm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    registered: set[str] = set()
    deprecated: set[str] = set()
    for path in (Path(spec.submodule_search_locations[0]) / "models").rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "register_model" not in text:
            continue
        registered.update(_REGISTERED.findall(text))
        for block in _DEPRECATIONS.findall(text):
            deprecated.update(_KEY.findall(block))
    if len(registered) < _MIN_NAMES:
        return None
    return frozenset(registered), frozenset(deprecated)


def unknown_backbone(name: str, candidates: Iterable[str]) -> UserError:
    """The error for a --backbone that is none of the names the suite takes."""
    close = difflib.get_close_matches(name, sorted(candidates), n=6, cutoff=0.6)
    hint = f" Similar timm models: {', '.join(close)}." if close else ""
    return UserError(
        f"unknown backbone {name!r}: not a timm model name, hf-hub:ORG/NAME nor "
        f"{DEMO_BACKBONE!r}.{hint}"
    )


def check_backbone_name(name: str) -> None:
    """Refuse a --backbone that is no timm architecture (with or without a pretrained tag), no
    hf-hub:ORG/NAME and not the demo ViT; a name it cannot judge is left to the full check."""
    if name == DEMO_BACKBONE or hub_repo(name) is not None:
        return
    names = timm_source_names()
    if names is None:
        return
    registered, deprecated = names
    arch = name.split(".", 1)[0]  # timm's rule: 'ARCH.TAG'
    if arch not in registered and arch not in deprecated:
        raise unknown_backbone(name, registered)


def check_backbone_options(name: str, *, pretrained: bool, weights: str | Path | None) -> None:
    """The backbone's name, and a --weights file that exists and goes with pretraining."""
    if weights is not None and not pretrained:
        raise UserError("--weights and --no-pretrained contradict each other; drop one of them")
    check_backbone_name(name)
    if weights is not None:
        check_weights_path(Path(weights).expanduser())
