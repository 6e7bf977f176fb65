"""--backbone, --weights and --no-pretrained checked without importing timm (which imports
torch): timm's model names and pretrained tags are read from its installed source files, and
the timm files that build no ViT from `timm_layouts.json` (bench.timm_layouts), so a typo or a
CNN fails in a second. bench.backbones.resolve_backbone runs these checks too, then the ones that need timm."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.backbone_config import hub_repo, unknown_tag
from bench.backbone_geometry import named_geometry, timm_layouts
from bench.errors import UserError
from bench.weights import DEMO_BACKBONE, check_weights_geometry, check_weights_path

# timm registers every architecture as a function under `@register_model` (other decorators may
# follow it), and a renamed one as a key of `register_model_deprecations(__name__, {...})`.
_REGISTERED = re.compile(r"^@register_model\b[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", re.M)
_DEPRECATIONS = re.compile(r"register_model_deprecations\(\s*__name__\s*,\s*\{(.*?)\}\s*\)", re.S)
_KEY = re.compile(r"['\"](\w+)['\"]\s*:")
# Pretrained configs are keys 'ARCH.TAG' of each file's `default_cfgs` dict. The scan also picks
# up other dotted keys (checkpoint names) and untrained configs: more tags than timm lists,
# never fewer, so the early check only refuses a tag timm does not have either.
_TAGGED = re.compile(r"['\"]([\w-]+)\.([\w-]+)['\"]\s*:")
# Fewer names than this means the scan no longer understands timm's layout: trust timm instead.
_MIN_NAMES = 500


@dataclass(frozen=True)
class TimmNames:
    """What the installed timm registers: architectures, deprecated names, the pretrained tags
    found for each architecture (none found: the scan cannot judge its tags), and the file (its
    module name under timm.models) that registers each."""

    registered: frozenset[str]
    deprecated: frozenset[str]
    tags: Mapping[str, frozenset[str]]
    modules: Mapping[str, str]


@functools.cache
def timm_source_names() -> TimmNames | None:
    """The installed timm's names, read from its source files without importing it; None when
    timm is not installed or its layout is not understood."""
    spec = importlib.util.find_spec("timm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    registered: set[str] = set()
    deprecated: set[str] = set()
    tags: dict[str, set[str]] = {}
    modules: dict[str, str] = {}
    for path in (Path(spec.submodule_search_locations[0]) / "models").rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "register_model" not in text:
            continue
        archs = _REGISTERED.findall(text)
        registered.update(archs)
        modules.update(dict.fromkeys(archs, path.stem))
        for block in _DEPRECATIONS.findall(text):
            deprecated.update(_KEY.findall(block))
        for arch, tag in _TAGGED.findall(text):
            tags.setdefault(arch, set()).add(tag)
    if len(registered) < _MIN_NAMES:
        return None
    return TimmNames(
        frozenset(registered),
        frozenset(deprecated),
        {a: frozenset(t) for a, t in tags.items()},
        modules,
    )


def not_vit_modules() -> frozenset[str]:
    """The timm modules that build no model the methods can adapt, when `timm_layouts.json` was
    written for the installed timm; empty otherwise (nothing is refused early)."""
    return frozenset(timm_layouts().get("not_vit", ()))


def weights_source(name: str) -> dict[str, str] | None:
    """Where the pretrained weights of timm backbone `name` come from (its pretrained config's
    hub repository and file, or URL), from `timm_layouts.json`; None when not known here."""
    return timm_layouts().get("weights", {}).get(name)


def not_vit_like(what: str) -> UserError:
    """The error for a backbone (`what`: its quoted name) without the ViT layout."""
    return UserError(
        f"backbone {what} is not a timm VisionTransformer-like model the methods can adapt "
        "(they need its `blocks` and classifier); choose a ViT backbone"
    )


def unknown_backbone(name: str, candidates: Iterable[str]) -> UserError:
    """The error for a --backbone that is none of the names the suite takes."""
    close = difflib.get_close_matches(name, sorted(candidates), n=6, cutoff=0.6)
    hint = f" Similar timm models: {', '.join(close)}." if close else ""
    return UserError(
        f"unknown backbone {name!r}: not a timm model name, hf-hub:ORG/NAME nor "
        f"{DEMO_BACKBONE!r}.{hint}"
    )


def check_backbone_name(name: str) -> None:
    """Refuse a --backbone that is no timm architecture, or one with a pretrained tag timm does
    not have, no hf-hub:ORG/NAME and not the demo ViT; a name it cannot judge is left to the
    full check."""
    if name == DEMO_BACKBONE or hub_repo(name) is not None:
        return
    names = timm_source_names()
    if names is None:
        return
    arch, dot, tag = name.partition(".")  # timm's rule: 'ARCH.TAG'
    if arch not in names.registered and arch not in names.deprecated:
        raise unknown_backbone(name, names.registered)
    found = names.tags.get(arch, frozenset())
    if dot and found and tag not in found:
        raise unknown_tag(name, (f"{arch}.{t}" for t in sorted(found)))
    if names.modules.get(arch) in not_vit_modules():
        raise not_vit_like(repr(name))


def check_backbone_options(name: str, *, pretrained: bool, weights: str | Path | None) -> None:
    """The backbone's name, and a --weights file that exists and goes with pretraining."""
    if weights is not None and not pretrained:
        raise UserError("--weights and --no-pretrained contradict each other; drop one of them")
    check_backbone_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
        check_weights_path(path)
        geometry = named_geometry(name) or {}
        # another architecture's weights, told from the file's header or pickle
        if geometry.get("width"):
            check_weights_geometry(path, name, geometry["width"], geometry.get("depth"))
