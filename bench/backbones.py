"""Backbones: any timm ViT by name, pretrained from the HF hub, a local file, or the suite's demo-vit."""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import os
import pickle
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench.errors import UserError

DEMO_BACKBONE = "demo-vit"
DEFAULT_BACKBONE = DEMO_BACKBONE
CACHE_ENV = "MEDPEFT_CACHE"
# A cache's temporary file or folder untouched this long was left by a killed writer (a live
# one is written within seconds, or touched at every batch); younger ones may be in use.
STALE_TEMP_S = 3600.0
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

    arch, kwargs = _architecture(source.name)
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


def _architecture(name: str) -> tuple[str, dict]:
    """The timm architecture and keyword arguments a backbone name stands for."""
    if name == DEMO_BACKBONE:
        from bench.demo_vit import DEMO_VIT_KWARGS

        return "vit_small_patch16_224", dict(DEMO_VIT_KWARGS)
    return name, {}


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
                names.extend(k.strip() for k in text[len("Missing keys (") : text.index(")")].split(","))

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield names
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def backbone_input_size(model) -> int:
    """The square input size the model was built for."""
    size = model.patch_embed.img_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


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


def check_weights_file(path: Path, backbone: str | None = None) -> None:
    """Open a weights file safely (safetensors, or torch.load with weights_only) before training,
    and check it holds what timm's loaders take: tensors under text names (numeric arrays in an
    .npz) and, given the backbone, tensors of its parameters' ranks."""
    if not path.is_file():
        raise UserError(
            f"weights file {path} does not exist; pass a safetensors or timm state-dict file"
        )
    try:
        if path.suffix == ".safetensors":
            import torch
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                if not names:
                    raise ValueError("it holds no tensors")
                # shapes only, on the meta device: nothing is read or allocated
                state = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in names}
            _check_state_dict(state, backbone)
        elif path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as npz:
                if not npz.files:
                    raise ValueError("it holds no arrays")
                _check_npz(npz)
        else:
            import torch

            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # the legacy (pre-1.6) torch.save format cannot be memory-mapped; still only
                # tensors and plain containers are unpickled
                state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
            _check_state_dict(state, backbone)
    except _BadContent as exc:
        raise UserError(f"cannot read weights file {path}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            # torch's own message suggests retrying with weights_only=False: never say that
            # about a file whose origin is unknown
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = (
                f"a pickle that calls {found[1]}, which loading with weights_only=True refuses "
                "(unpickling it could run code)"
                if found
                else "not a tensor state dict that loading with weights_only=True can read"
            )
            raise UserError(
                f"cannot read weights file {path}: it is {what}. Give a .safetensors file or a "
                "timm/torch state dict; if you trust the file's source, convert it to .safetensors"
            ) from None
        raise UserError(
            f"cannot read weights file {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Give a .safetensors file, a timm/torch state dict (.pth/.bin/.pt) or a Google ViT .npz"
        ) from None


class _BadContent(Exception):
    """A weights file that reads, but not as timm's loaders need: the message names the entry."""


# timm takes a checkpoint's tensors from the first of these it holds (the EMA ones only when not
# None); its ViT checkpoint filter then unwraps "model", "state_dict" and "encoder" in turn.
_OUTER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
_INNER_KEYS = ("model", "state_dict", "encoder")
_STATE_DICT = "a weights file maps parameter names to tensors, as model.state_dict() does"
# Prefixes timm strips from parameter names (DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _check_state_dict(checkpoint: dict, backbone: str | None) -> None:
    """Raise _BadContent for what makes timm's loaders fail without naming the entry: a wrapper
    ("state_dict", "model", ...) that is no dict, a name that is no text, a value that is no
    real tensor, or a tensor of another rank than the backbone's parameter of that name."""
    import torch

    state, where = checkpoint, []
    outer = [k for k in _OUTER_KEYS if k in state and (state[k] is not None or "ema" not in k)]
    for key in (*outer[:1], *_INNER_KEYS):
        if key not in state:
            continue
        where.append(key)
        state = state[key]
        if not isinstance(state, dict):
            raise _BadContent(
                f"entry {'.'.join(where)!r} holds {_kind(state)}, expected a dict of tensors; "
                f"{_STATE_DICT}"
            )
    shapes = _model_shapes(backbone) if backbone is not None else {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise _BadContent(f"an entry is named {_kind(key)}, expected text; {_STATE_DICT}")
        name = ".".join([*where, key])
        if not isinstance(value, torch.Tensor):
            raise _BadContent(
                f"entry {name!r} holds {_kind(value)}, expected a tensor; {_STATE_DICT}"
            )
        if value.is_complex():
            raise _BadContent(f"entry {name!r} is a {value.dtype} tensor, expected real numbers")
        want = shapes.get(_strip_wrappers(key))
        # timm reshapes a flattened patch projection (a linear layer's weight) into the conv's
        if (
            want is None
            or value.ndim == len(want)
            or (key.endswith("patch_embed.proj.weight") and 2 <= value.ndim < len(want))
        ):
            continue
        raise _BadContent(
            f"entry {name!r} is a {value.ndim}-D tensor of shape {tuple(value.shape)}, expected "
            f"{len(want)}-D like {backbone}'s {want}; pass weights of this architecture"
        )


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


@functools.cache
def _model_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """The parameter and buffer shapes of a backbone, from a weightless build on the meta device
    ({} when that build fails: ranks then go unchecked, and loading reports what does not fit)."""
    import timm
    import torch

    arch, kwargs = _architecture(backbone)
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **kwargs)
    except Exception:
        return {}
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# Arrays of Google's .npz layout that timm's loader reshapes or resamples before copying them:
# a wrong rank fails there without naming the array. Other arrays fail their copy (a clear
# "cannot build backbone" line).
_NPZ_RANKS = (("embedding/kernel", (4, 2)), ("pos_embedding", (3,)), ("cls", (3,)))


def _check_npz(npz) -> None:
    """Raise _BadContent for an .npz entry timm's loader cannot turn into a tensor, or one of the
    embedding arrays at a rank it cannot use."""
    import numpy as np

    for name in npz.files:
        try:
            array = npz[name]
        except ValueError:  # an object array: timm's loader refuses it unread (allow_pickle=False)
            continue
        if not isinstance(array, np.ndarray):
            raise _BadContent(
                f"entry {name!r} is not a .npy array; a Google ViT .npz holds one array per parameter"
            )
        if array.dtype.kind not in "biuf":
            what = {"U": "text", "S": "bytes", "c": "complex numbers"}.get(
                array.dtype.kind, f"{array.dtype} values"
            )
            raise _BadContent(f"array {name!r} holds {what}, expected real numbers")
        for suffix, ranks in _NPZ_RANKS:
            if (name == suffix or name.endswith(f"/{suffix}")) and array.ndim not in ranks:
                expected = " or ".join(f"{r}-D" for r in ranks)
                raise _BadContent(
                    f"array {name!r} is {array.ndim}-D of shape {array.shape}, expected {expected} "
                    "as in Google's ViT checkpoints"
                )


def _kind(value: object) -> str:
    """'an int (5)', 'a list', 'None': what a value is, for a message."""
    if value is None:
        return "None"
    kind = type(value).__name__
    text = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    short = isinstance(value, (bool, int, float, str)) and len(repr(value)) <= 40
    return f"{text} ({value!r})" if short else text


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


def cache_root() -> Path:
    """Where the suite keeps what it builds (demo-vit weights, frozen features, decoded images):
    $MEDPEFT_CACHE, else ~/.cache/medpeft-bench."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medpeft-bench"


def check_cache_writable(*folders: Path) -> None:
    """Create each cache folder (default: the cache root) and write a probe file in it, so that a
    cache that cannot be written fails now with a UserError naming the folder and what to change,
    not with a traceback after minutes of work."""
    import tempfile

    for folder in folders or (cache_root(),):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # an unnamed file where supported, deleted on close: a kill here leaves nothing
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise UserError(
                f"cannot write the cache folder {folder}: {_why_unwritable(folder, exc)}. "
                f"{_cache_advice(folder)}"
            ) from None


def _why_unwritable(folder: Path, exc: OSError) -> str:
    """'X is a file, not a folder' when a file stands in the folder's path, else the OS's reason."""
    blocker = folder
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if blocker.exists() and not blocker.is_dir():
        return f"{blocker} is a file, not a folder"
    return exc.strerror or str(exc)


def _cache_advice(folder: Path) -> str:
    root = cache_root()
    if not folder.is_relative_to(root):
        return "Choose a folder you can write"
    if os.environ.get(CACHE_ENV):
        return f"Set {CACHE_ENV} (now {os.environ[CACHE_ENV]}) to a folder you can write"
    return f"Set {CACHE_ENV} to a folder you can write (it is unset, so {root} is used)"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (weights files and feature caches are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
