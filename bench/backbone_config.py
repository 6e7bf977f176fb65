"""What a backbone name stands for: the timm architecture it is built as and its pretrained
config (native input size, mean/std, interpolation, crop), for each kind of name the suite takes:
a timm registry name (`vit_base_patch16_224.augreg_in21k`), a Hugging Face hub name in timm's
format (`hf-hub:ORG/NAME`, whose config.json holds the architecture, its build arguments and the
pretrained config; timm's `load_model_config_from_hf` reads it) and the suite's demo-vit.
Everything that asks a backbone about itself before it is built asks here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.errors import UserError
from bench.hub_access import (
    HUB_WEIGHT_FILES,
    cached_file,
    reachable,
    timm_hub_problem,
    unavailable_reason,
    url_cached,
)
from bench.weights import DEMO_BACKBONE

HUB_PREFIX = "hf-hub:"
# The timm architecture the demo backbone is built as (bench.demo_vit).
DEMO_ARCHITECTURE = "vit_small_patch16_224"
T = TypeVar("T")


def hub_repo(name: str) -> str | None:
    """'hf-hub:ORG/NAME[@REV]' -> 'ORG/NAME[@REV]'; None for any other name."""
    return name[len(HUB_PREFIX) :] if name.startswith(HUB_PREFIX) else None


@dataclass(frozen=True)
class BackboneConfig:
    """A backbone as timm describes it before building it."""

    name: str  # as the user gave it (and the record keeps it)
    architecture: str  # timm's model name, e.g. a hub config's "architecture"
    model_args: dict[str, Any] = field(default_factory=dict)  # what it is built with
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)  # timm's pretrained_cfg

    @property
    def img_size(self) -> int:
        """The native input side (224 when the config names none, as timm's default)."""
        size = self.pretrained_cfg.get("input_size") or (3, 224, 224)
        return int(size[-1])

    def create_args(self) -> tuple[str, dict[str, Any]]:
        """What `timm.create_model` takes to build this backbone: a hub name goes to timm as
        given (timm reads its config.json, applies its model_args and loads its weights from the
        hub); the others go as their architecture and build arguments."""
        if hub_repo(self.name) is not None:
            return self.name, {}
        return self.architecture, dict(self.model_args)


def backbone_config(name: str) -> BackboneConfig:
    """The config of a registry name, a hub name or demo-vit. A hub name whose config.json is
    neither in the local HF cache nor downloadable now is a one-line UserError that says what to
    pass instead."""
    if name == DEMO_BACKBONE:
        return _demo_config()
    repo = hub_repo(name)
    if repo is None:
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except RuntimeError:  # timm's 'Invalid pretrained tag (...)'
            arch = name.split(".", 1)[0]
            raise unknown_tag(name, timm.list_pretrained(f"{arch}.*")) from None
        return BackboneConfig(name, name, pretrained_cfg=cfg.to_dict() if cfg else {})
    return _hub_config(name, repo)


def unknown_tag(name: str, tags: Iterable[str]) -> UserError:
    """The error for 'ARCH.TAG' whose architecture has no such pretrained tag; `tags`: the
    architecture's names with tags ('ARCH.TAG2', ...)."""
    arch, _, tag = name.partition(".")
    tags = list(tags)
    have = f"; its tags: {', '.join(tags)}" if tags else "; it has no pretrained tags"
    return UserError(f"backbone {name!r}: {arch} has no pretrained tag {tag!r}{have}")


def _demo_config() -> BackboneConfig:
    from bench.backbone_geometry import DEMO_VIT_KWARGS
    from bench.demo_vit import DEMO_VIT_MEAN, DEMO_VIT_STD

    size = int(DEMO_VIT_KWARGS["img_size"])
    return BackboneConfig(
        DEMO_BACKBONE,
        DEMO_ARCHITECTURE,
        dict(DEMO_VIT_KWARGS),
        dict(
            mean=tuple(DEMO_VIT_MEAN),
            std=tuple(DEMO_VIT_STD),
            input_size=(3, size, size),
            # demo-vit was trained and is evaluated on the whole image resized (bilinear): no
            # crop, unlike timm's ImageNet-style default for the architecture it borrows
            interpolation="bilinear",
            crop_pct=1.0,
            crop_mode="squash",
            # the demo file has no head: timm builds a new one instead of looking for it
            num_classes=0,
            hf_hub_id=None,
            url=None,
            custom_load=False,
        ),
    )


def hub_config_missing(name: str, repo: str) -> UserError | None:
    """The error for a hub backbone whose config.json is neither in the local cache nor
    downloadable now; None when it is either. Torch-free."""
    if cached_file(repo, "config.json") is not None:
        return None
    why = unavailable_reason()
    if why is None:
        return None
    return UserError(
        f"backbone {name!r} is not in the local Hugging Face cache and {why}: connect to "
        "the internet once (the first run caches it, later runs work offline), or pass a "
        "local checkpoint as --backbone TIMM_ARCHITECTURE --weights FILE"
    )


def weights_missing(name: str, cfg: Mapping[str, Any], architecture: str) -> UserError | None:
    """The error for pretrained weights of backbone `name` (pretrained config `cfg`, timm
    architecture `architecture`) that are neither cached nor downloadable now; None when they
    are either. Torch-free: the early checks pass a config read from `timm_layouts.json`."""
    repo = hub_repo(name) or cfg.get("hf_hub_id")
    url = cfg.get("url")
    if not (repo or url):
        return UserError(
            f"timm has no pretrained weights for {name!r}; pass --weights PATH or --no-pretrained"
        )
    if repo:
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_WEIGHT_FILES
        if any(cached_file(repo, f) is not None for f in files):
            return None
        why = unavailable_reason()
    else:
        why = None if url_cached(url) or reachable(url) else f"{url} cannot be reached"
    if why is None:
        return None
    of = f" of timm architecture {architecture}" if architecture != name else ""
    return UserError(
        f"pretrained weights for {name!r} are not cached and {why}. Connect to the internet "
        f"once (timm.create_model({name!r}, pretrained=True) fills the HF cache), or pass a "
        f"local file with --weights PATH (safetensors or timm state dict{of}), or use "
        "--no-pretrained"
    )


@functools.lru_cache(maxsize=32)
def _hub_config(name: str, repo: str) -> BackboneConfig:
    """A hub backbone's config.json through timm (cached: asking the hub again is a request)."""
    from timm.models import load_model_config_from_hf

    problem = timm_hub_problem()
    if problem is not None:
        raise UserError(f"backbone {name!r} is read from the Hugging Face hub, but {problem}")
    if missing := hub_config_missing(name, repo):
        raise missing
    try:
        # timm 1.0.9 and later return (pretrained_cfg, architecture, model_args)
        cfg, arch, model_args = load_model_config_from_hf(repo)
    except Exception as exc:
        # a wrong name, a gated repository (UNI, Virchow) or a config without an architecture
        first = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise UserError(
            f"cannot read the config.json of backbone {name!r} from the Hugging Face hub: "
            f"{first.strip()}. Check the name; a gated model needs its terms accepted on the hub "
            "and `hf auth login` (or HF_TOKEN)"
        ) from None
    return BackboneConfig(name, str(arch), dict(model_args or {}), dict(cfg))


def architecture(name: str) -> tuple[str, dict[str, Any]]:
    """The timm architecture and build arguments of a backbone, for a weightless build (shapes,
    patch size) that needs no network once the config is known."""
    cfg = backbone_config(name)
    return cfg.architecture, dict(cfg.model_args)


def meta_build(name: str):
    """The backbone without weights, on the meta device: its shapes, no memory, no download."""
    import timm

    arch, kwargs = architecture(name)
    return weightless(lambda: timm.create_model(arch, pretrained=False, **kwargs))


def weightless(build: Callable[[], T]) -> T:
    """`build()` on the meta device: shapes without memory or init time. A build that needs
    values runs on the CPU instead (the same shapes, slower): timm 1.0.9 (the floor) calls
    `.item()` on the drop-path rates while it builds a ViT, peft's BOFT calls it while it builds
    its butterfly permutations, and peft's SHiRA draws its sparse mask with `torch.nonzero`,
    which has no meta implementation."""
    import torch

    try:
        with torch.device("meta"):
            return build()
    except Exception as exc:  # also create_backbone's UserError, which quotes the cause
        why = str(exc)
        if "meta tensors" not in why and not (
            isinstance(exc, NotImplementedError) and "register_meta" in why
        ):
            raise
    with torch.random.fork_rng(devices=[]):  # its random init must not move the run's numbers
        return build()
