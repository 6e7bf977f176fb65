"""Backbones: any timm ViT by name, pretrained from the HF hub, a local file, or the suite's demo-vit."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench.errors import UserError
from bench.weights import DEMO_BACKBONE, architecture, check_weights_file

# Backbones worth naming in `bench list`; any timm ViT name works.
SUGGESTED_BACKBONES = (
    DEMO_BACKBONE,
    "vit_base_patch16_224.orig_in21k",
    "vit_base_patch16_384.orig_in21k_ft_in1k",
    "vit_large_patch16_224.orig_in21k",
    "vit_small_patch16_224.augreg_in21k",
    "test_vit",
)


@dataclass(frozen=True)
class BackboneSource:
    """Where a cell's backbone weights come from, resolved and checked before any training."""

    name: str
    pretrained: bool
    weights: Path | None
    weights_sha256: str | None

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_BACKBONE


def resolve_backbone(
    name: str, *, pretrained: bool, weights: str | Path | None, progress: bool = True
) -> BackboneSource:
    """Check the backbone name and its weights; fetch or build the weights now, not mid-grid."""
    import timm

    if weights is not None and not pretrained:
        raise UserError("--weights and --no-pretrained contradict each other; drop one of them")
    if name != DEMO_BACKBONE and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
        hint = f" Similar timm models: {', '.join(close)}." if close else ""
        raise UserError(
            f"unknown backbone {name!r}: not a timm model name nor {DEMO_BACKBONE!r}.{hint}"
        )
    path = Path(weights).expanduser() if weights is not None else None
    if path is not None:
        check_weights_file(path, name)
    elif pretrained and name == DEMO_BACKBONE:
        from bench.demo_vit import ensure_demo_vit

        path = ensure_demo_vit(progress=progress)
    elif pretrained:
        _check_hub_reachable(name)
    digest = file_sha256(path) if path is not None else None
    return BackboneSource(name=name, pretrained=pretrained, weights=path, weights_sha256=digest)


def create_backbone(source: BackboneSource, *, num_classes: int, img_size: int | None = None):
    """Build the timm ViT with a fresh `num_classes` head, weights loaded, everything frozen."""
    import timm

    arch, kwargs = architecture(source.name)
    kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    overlay: dict = {}
    if source.name == DEMO_BACKBONE:
        from bench.demo_vit import DEMO_VIT_MEAN, DEMO_VIT_STD

        size = kwargs["img_size"]
        # The demo file has no head, so tell timm the source had none and let it build a new one.
        overlay = dict(
            mean=tuple(DEMO_VIT_MEAN),
            std=tuple(DEMO_VIT_STD),
            input_size=(3, size, size),
            num_classes=0,
            hf_hub_id=None,
            url=None,
            custom_load=False,
        )
    if source.weights is not None:
        # timm loads `.npz` (Google's original format) with a custom loader, everything else as a
        # state dict; pretrained_cfg_overlay(file=...) is timm's documented local-file path.
        overlay.update(file=str(source.weights), custom_load=source.weights.suffix == ".npz")
    try:
        with _missing_keys() as missing:
            model = timm.create_model(
                arch,
                pretrained=source.pretrained,
                pretrained_cfg_overlay=overlay or None,
                **kwargs,
            )
    except Exception as exc:
        # check_weights_file refuses the files known to break timm's loaders; any other error
        # while a user's file is loaded is still that file's, and gets a line, not a traceback.
        if source.weights is None and not isinstance(exc, (RuntimeError, KeyError, ValueError)):
            raise
        where = f" from {source.weights}" if source.weights else ""
        raise UserError(
            f"cannot build backbone {source.name!r}{where}: {_first_lines(exc)}"
        ) from exc
    if not hasattr(model, "blocks") or not hasattr(model, "get_classifier"):
        raise UserError(f"backbone {source.name!r} is not a timm VisionTransformer-like model")
    head = str((getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head")
    lost = [k for k in missing if k.split(".", 1)[0] != head.split(".", 1)[0]]
    if lost:
        # timm loads non-strictly whenever the head is replaced, so a file lacking backbone
        # tensors would leave them random in a run recorded as pretrained.
        where = f"weights file {source.weights}" if source.weights else f"{source.name}'s weights"
        shown = ", ".join(lost[:8]) + (f" and {len(lost) - 8} more" if len(lost) > 8 else "")
        raise UserError(
            f"{where} lack backbone tensors ({shown}); they would stay randomly initialised. "
            "Pass a complete checkpoint of this architecture"
        )
    model.requires_grad_(False)
    return model


def _first_lines(exc: BaseException) -> str:
    """An error's first line, and the next one too when the first only introduces a list (torch's
    'Error(s) in loading state_dict for X:' is followed by the key that failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


@contextlib.contextmanager
def _missing_keys():
    """The parameter names timm reports missing while loading pretrained weights (its loader logs
    them at INFO and carries on); collected from timm's log for the duration of the block."""
    import logging

    names: list[str] = []
    logger = logging.getLogger("timm.models._builder")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith("Missing keys (") and ")" in text:
                names.extend(
                    k.strip() for k in text[len("Missing keys (") : text.index(")")].split(",")
                )

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield names
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def default_img_size(name: str) -> int:
    """The native input size of a backbone (demo-vit: 64), from timm's pretrained config."""
    if name == DEMO_BACKBONE:
        from bench.demo_vit import DEMO_VIT_KWARGS

        return int(DEMO_VIT_KWARGS["img_size"])
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def backbone_patch_size(name: str) -> int:
    """The patch size of a backbone, read from a weightless build on the meta device."""
    if name == DEMO_BACKBONE:
        from bench.demo_vit import DEMO_VIT_KWARGS

        return int(DEMO_VIT_KWARGS["patch_size"])
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    patch = model.patch_embed.patch_size
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def method_img_size(
    method: str, hparams: dict, *, requested: int | None, backbone: str, data_size: int | None
) -> int:
    """A cell's input size: --img-size when given, else the method's own rule (FPT+: its frozen
    model at high resolution), else the backbone's native size. A method hyperparameter that pins
    the size (FPT+'s lpm_size) wins over --img-size for that method."""
    from methods import get_method

    rule = get_method(method).input_size
    native = default_img_size(backbone)
    if rule is None:
        return requested or native
    if requested and not hparams.get("lpm_size"):
        return requested
    return rule(native, backbone_patch_size(backbone), data_size, hparams)


def _check_hub_reachable(name: str) -> None:
    """Fail fast when hub weights are neither cached nor downloadable (hub clients retry for ~1 min)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(
            f"timm has no pretrained weights for {name!r}; pass --weights PATH or --no-pretrained"
        )
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    else:
        host, offline = urlparse(cfg.url).hostname, False
    if offline or not _reachable(host):
        why = "HF_HUB_OFFLINE is set" if offline else f"{host} cannot be reached"
        raise UserError(
            f"pretrained weights for {name!r} are not cached and {why}. Download them where there is "
            f"internet (timm.create_model({name!r}, pretrained=True) fills the HF cache), or pass a local "
            "file with --weights PATH (safetensors or timm state dict), or use --no-pretrained"
        )


def _reachable(host: str | None, port: int = 443, timeout: float = 3.0) -> bool:
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (weights files and feature caches are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
