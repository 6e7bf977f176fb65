"""Backbones: any timm ViT by registry name or as `hf-hub:ORG/NAME` (timm's Hugging Face hub
format: UNI, RETFound, Virchow, H-optimus are published so), pretrained from the HF hub or a
local file, or the suite's demo-vit."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.backbone_config import backbone_config, hub_repo, meta_build, weights_missing
from bench.backbone_geometry import model_geometry
from bench.backbone_options import check_backbone_options, not_vit_like, unknown_backbone
from bench.errors import UserError
from bench.hub_access import timm_hub_problem
from bench.weights import DEMO_BACKBONE, check_weights_file

# Backbones worth naming in `bench list`; any timm ViT name or hf-hub:ORG/NAME works.
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

    check_backbone_options(name, pretrained=pretrained, weights=weights)
    # a name the source scan could not judge (an unusual timm install) is judged by timm
    if name != DEMO_BACKBONE and hub_repo(name) is None and not timm.is_model(name):
        raise unknown_backbone(name, timm.list_models())
    if name != DEMO_BACKBONE:
        _check_adaptable(name)  # a hub name's config.json is read here: its architecture
        _check_eval_view(name)
    path = Path(weights).expanduser() if weights is not None else None
    if path is not None:
        check_weights_file(path, name)
    elif pretrained and name == DEMO_BACKBONE:
        from bench.demo_vit import ensure_demo_vit

        path = ensure_demo_vit(progress=progress)
    elif pretrained:
        check_weights_reachable(name)
    digest = file_sha256(path) if path is not None else None
    return BackboneSource(name=name, pretrained=pretrained, weights=path, weights_sha256=digest)


def create_backbone(source: BackboneSource, *, num_classes: int, img_size: int | None = None):
    """Build the timm ViT with a fresh `num_classes` head, weights loaded, everything frozen."""
    import timm

    config = backbone_config(source.name)
    arch, kwargs = config.create_args()
    kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    overlay: dict = {}
    if source.name == DEMO_BACKBONE:
        # demo-vit's own normalisation and whole-image view, and no head in its file
        size = kwargs["img_size"]
        overlay = dict(config.pretrained_cfg, input_size=(3, size, size))
    if source.weights is not None:
        # timm loads `.npz` (Google's original format) with a custom loader, everything else as a
        # state dict; pretrained_cfg_overlay(file=...) is timm's documented local-file path. A
        # hub config's source "hf-hub" would win over the file in timm's loader: clear it.
        overlay.update(file=str(source.weights), custom_load=source.weights.suffix == ".npz")
        if hub_repo(source.name) is not None:
            overlay.update(source="")
    try:
        with _load_report() as keys, _checkpoint_pos_embeds() as checkpoint_pos:
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
    _check_vit_like(model, source.name)
    head = str((getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head")
    # timm loads non-strictly whenever the head is replaced: a file lacking backbone tensors
    # would leave them random in a run recorded as pretrained, and tensors the model has no
    # place for (another model's) would be dropped unsaid.
    lost, extra = ([k for k in keys[kind] if not _in_head(k, head)] for kind in _LOAD_REPORTS)
    where = f"weights file {source.weights}" if source.weights else f"{source.name}'s weights"
    if lost:
        raise UserError(
            f"{where} lack backbone tensors ({_some(lost)}); they would stay randomly "
            "initialised. Pass a complete checkpoint of this architecture"
        )
    if extra and source.weights is not None:  # timm's own checkpoints are timm's to judge
        raise UserError(
            f"{where} hold tensors {source.name} has no place for ({_some(extra)}); they would "
            "be dropped. Pass a checkpoint of this architecture"
        )
    if source.pretrained and len(checkpoint_pos) == 1:
        # The checkpoint's own position embedding, which timm resampled to this size: kept (a
        # plain attribute: no parameter or buffer, so state dicts and devices stay as they were)
        # for a method that resamples it its own way (FPT's hf_style). Small: one [1, N, D].
        model.pretrained_pos_embed = checkpoint_pos[0]
    model.requires_grad_(False)
    return model


def _first_lines(exc: BaseException) -> str:
    """An error's first line, and the next one too when the first only introduces a list (torch's
    'Error(s) in loading state_dict for X:' is followed by the key that failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


def _in_head(key: str, head: str) -> bool:
    return key.split(".", 1)[0] == head.split(".", 1)[0]


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


# What timm's loader logs, and carries on: "Missing keys (a, b) discovered ..." (at INFO) and
# "Unexpected keys (c) found ..." (a warning).
_LOAD_REPORTS = ("Missing keys (", "Unexpected keys (")


@contextlib.contextmanager
def _load_report():
    """The parameter names timm reports missing, and unexpected, while loading pretrained
    weights: collected from timm's log for the duration of the block, by _LOAD_REPORTS."""
    import logging

    keys: dict[str, list[str]] = {kind: [] for kind in _LOAD_REPORTS}
    logger = logging.getLogger("timm.models._builder")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            for kind, names in keys.items():
                if text.startswith(kind) and ")" in text:
                    names.extend(k.strip() for k in text[len(kind) : text.index(")")].split(","))

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield keys
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def _checkpoint_pos_embeds():
    """The position embeddings timm's ViT loaders resample while a model is built: the loaded
    checkpoint's own grid, before it becomes the model's (FPT's hf_style needs it; rebuilding the
    model at its pretrained size would cost a second build and shift the global RNG).

    Both loaders of timm.models.vision_transformer (the state-dict filter and the .npz loader)
    call `resample_abs_pos_embed` from their module's namespace, from timm 1.0.9 on; it is wrapped
    there for the block and still returns exactly what it did, so every build is unchanged. Only
    a resampled checkpoint is seen (none at the pretrained size); a timm whose loaders resample
    otherwise leaves the list empty."""
    from timm.models import vision_transformer as vit

    seen: list = []
    original = getattr(vit, "resample_abs_pos_embed", None)
    if original is None:
        yield seen
        return

    def keep(posemb, *args, **kwargs):
        seen.append(posemb.detach().clone())
        return original(posemb, *args, **kwargs)

    vit.resample_abs_pos_embed = keep
    try:
        yield seen
    finally:
        vit.resample_abs_pos_embed = original


def default_img_size(name: str) -> int:
    """The native input size of a backbone (demo-vit: 64), from its pretrained config."""
    return backbone_config(name).img_size


def backbone_patch_size(name: str) -> int:
    """The patch size of a backbone, read from a weightless build on the meta device."""
    return model_geometry(meta_build(name))["patch"]


def vit_like(model) -> bool:
    """The methods adapt timm's VisionTransformer layout: transformer `blocks` and a classifier
    they can replace."""
    return hasattr(model, "blocks") and hasattr(model, "get_classifier")


def _check_vit_like(model, name: str) -> None:
    if not vit_like(model):
        arch = backbone_config(name).architecture
        raise not_vit_like(f"{name!r} (timm architecture {arch!r})" if arch != name else repr(name))


def _check_adaptable(name: str) -> None:
    """A backbone's architecture exists in this timm and is a ViT, checked on a weightless build
    before any cell runs."""
    import timm

    arch = backbone_config(name).architecture
    if not timm.is_model(arch):
        raise UserError(
            f"backbone {name!r} is a {arch!r}, which timm {timm.__version__} does not know; "
            "upgrade timm (pip install -U timm)"
        )
    try:
        model = meta_build(name)
    except Exception as exc:
        raise UserError(f"cannot build backbone {name!r} ({arch}): {_first_lines(exc)}") from exc
    _check_vit_like(model, name)


def _check_eval_view(name: str) -> None:
    """The evaluation resize and crop of the backbone's pretrained config is one the suite can
    apply (a UserError now, not a failed cell)."""
    from bench.eval_view import EvalView

    config = backbone_config(name)
    try:
        EvalView.from_pretrained_cfg(config.pretrained_cfg, img_size=config.img_size)
    except UserError as exc:
        raise UserError(f"backbone {name!r}: {exc}") from None


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


def check_weights_reachable(name: str) -> None:
    """Fail fast when hub weights are neither cached nor downloadable (hub clients retry for ~1 min)."""
    config = backbone_config(name)
    if hub_repo(name) or config.pretrained_cfg.get("hf_hub_id"):
        problem = timm_hub_problem()
        if problem is not None:
            raise UserError(
                f"pretrained weights for {name!r} come from the Hugging Face hub, but {problem}"
            )
    if missing := weights_missing(name, config.pretrained_cfg, config.architecture):
        raise missing


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (weights files and feature caches are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
