"""Weights files users bring, opened safely and checked before timm loads them: safetensors, a
torch state dict through `torch.load(weights_only=True)` (a pickle that would run code is refused)
or Google's ViT `.npz` (no pickled arrays), holding tensors under text names, of the ranks the
architecture has. A bad file is one UserError naming the file and the entry. Weights of another
embedding width or depth are told before torch is imported, from the file's header or pickle."""

from __future__ import annotations

import functools
import json
import pickle
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.errors import UserError

# The suite-pretrained demo backbone (bench.demo_vit), named like a timm model.
DEMO_BACKBONE = "demo-vit"


# The first bytes of what torch.load reads: torch.save's zip archive, the legacy format's pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_NOT_A_STATE_DICT = "not a tensor state dict that loading with weights_only=True can read"


def check_weights_path(path: Path) -> None:
    """A --weights path that names a file, which (unless .safetensors or .npz) starts as a file
    torch.load reads does; told from its first bytes, without importing torch."""
    if not path.is_file():
        raise UserError(
            f"weights file {path} does not exist; pass a safetensors or timm state-dict file"
        )
    if path.suffix not in (".safetensors", ".npz"):
        with path.open("rb") as f:
            if not f.read(4).startswith(_TORCH_MAGIC):
                raise _refused(path, _NOT_A_STATE_DICT)


# The patch projection: its output channels are the embedding width, which no checkpoint
# conversion of timm's changes (it resamples the patch size and the position embedding).
PATCH_PROJECTION = "patch_embed.proj.weight"


def width_mismatch(name: str, shape: Sequence[int], backbone: str, width: int) -> str | None:
    """What is wrong with a file's patch projection `name` of `shape` for `backbone`, `width`
    wide (another architecture's weights), or None."""
    if len(shape) < 2 or shape[0] == width:  # not a projection: the rank check says so
        return None
    return (
        f"entry {name!r} projects patches to width {shape[0]}, but {backbone} is {width} wide; "
        "pass weights of this architecture"
    )


def depth_mismatch(keys: Iterable[str], backbone: str, depth: int) -> str | None:
    """What is wrong with a file whose entries (`keys`, without wrappers) hold more transformer
    blocks than `backbone`'s `depth` (a deeper model's weights, which timm would load only in
    part, dropping the rest), or None."""
    blocks = 1 + max(map(_block_index, keys), default=-1)
    if blocks <= depth:
        return None
    return (
        f"it holds {blocks} transformer blocks, but {backbone} has {depth}; pass weights of this "
        "architecture (a deeper model's would load only in part)"
    )


def _block_index(key: str) -> int:
    """N of an entry 'blocks.N. ...', else -1."""
    container, _, rest = key.partition(".")
    index = rest.split(".", 1)[0]
    return int(index) if container == "blocks" and index.isdigit() else -1


def check_weights_geometry(path: Path, backbone: str, width: int, depth: int | None) -> None:
    """A weights file's patch projection against the backbone's embedding width, and its blocks
    against its depth, read without torch: from a .safetensors file's JSON header, or from the
    pickle of torch.save's zip archive with its tensors' shapes in place of their data. A file
    this cannot read so (the legacy torch format, a pickle of other objects) is left to
    `check_weights_file`, which says the same of these two."""
    shapes = _safetensors_shapes(path) if path.suffix == ".safetensors" else _torch_zip_shapes(path)
    if not isinstance(shapes, dict):
        return
    try:
        state, where = _unwrap(shapes)
    except _BadContent:
        return  # said by the full check, with the entry's content
    keys = {_strip_wrappers(k): k for k in state if isinstance(k, str)}
    shape = state[keys[PATCH_PROJECTION]] if PATCH_PROJECTION in keys else None
    wrong = (
        width_mismatch(".".join([*where, keys[PATCH_PROJECTION]]), shape, backbone, width)
        if isinstance(shape, (list, tuple))
        else None
    ) or (depth_mismatch(keys, backbone, depth) if depth else None)
    if wrong:
        raise UserError(f"cannot read weights file {path}: {wrong}")


def _safetensors_shapes(path: Path) -> dict | None:
    """Entry name -> shape, from a .safetensors file's header; None when it cannot be read."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size <= _MAX_HEADER else None
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return {k: v.get("shape") for k, v in header.items() if isinstance(v, dict)}


def _torch_zip_shapes(path: Path) -> object:
    """What torch.load would return, with each tensor replaced by its shape (a tuple), read
    without torch or the tensors' data; None when the file is no torch.save zip archive or its
    pickle holds objects other than plain containers and tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                return None
            with archive.open(pickles[0]) as f:
                return _ShapeUnpickler(f).load()
    except Exception:  # whatever this cannot read, the full check reads with torch and names
        return None


def _tensor_shape(storage, offset, size, *rest) -> tuple[int, ...]:
    return tuple(size)


def _parameter(data, *rest):
    return data


class _StateDict(dict):
    """An OrderedDict of torch.save's pickle: a state dict (whose `_metadata` attribute, the
    modules' versions, is dropped) or a tensor's empty hook dict."""

    def __setstate__(self, state) -> None:
        pass


# The only globals _ShapeUnpickler resolves, to stand-ins that read no data.
_SHAPE_GLOBALS = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor_shape,
    ("torch._utils", "_rebuild_parameter"): _parameter,
}


class _ShapeUnpickler(pickle.Unpickler):
    """torch.save's pickle, with tensors rebuilt as their shapes: unpickling calls nothing but
    _SHAPE_GLOBALS (any other global raises)."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            return None  # a storage's type, only ever part of a persistent id
        found = _SHAPE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not read without torch")
        return found

    def persistent_load(self, pid):
        return None  # the storage: its bytes are never read


# safetensors refuses headers over 100 MB
_MAX_HEADER = 100_000_000


def _refused(path: Path, what: str) -> UserError:
    return UserError(
        f"cannot read weights file {path}: it is {what}. Give a .safetensors file or a "
        "timm/torch state dict; if you trust the file's source, convert it to .safetensors"
    )


def check_weights_file(path: Path, backbone: str | None = None) -> None:
    """Open a weights file safely (safetensors, or torch.load with weights_only) before training,
    and check it holds what timm's loaders take: tensors under text names (numeric arrays in an
    .npz) and, given the backbone, tensors of its parameters' ranks."""
    check_weights_path(path)
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
                else _NOT_A_STATE_DICT
            )
            raise _refused(path, what) from None
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
    real tensor, a tensor of another rank than the backbone's parameter of that name, and (as
    `check_weights_geometry` says before torch) another width or more blocks than it has."""
    import torch

    state, where = _unwrap(checkpoint)
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
        bare = _strip_wrappers(key)
        want, projection = shapes.get(bare), bare == PATCH_PROJECTION
        # timm reshapes a flattened patch projection (a linear layer's weight) into the conv's
        if want is not None and not (
            value.ndim == len(want) or (projection and 2 <= value.ndim < len(want))
        ):
            raise _BadContent(
                f"entry {name!r} is a {value.ndim}-D tensor of shape {tuple(value.shape)}, "
                f"expected {len(want)}-D like {backbone}'s {want}; pass weights of this "
                "architecture"
            )
        if want and projection and (wrong := width_mismatch(name, value.shape, backbone, want[0])):
            raise _BadContent(wrong)
    depth = 1 + max(map(_block_index, shapes), default=-1)
    if depth and (wrong := depth_mismatch(map(_strip_wrappers, state), backbone, depth)):
        raise _BadContent(wrong)


def _unwrap(checkpoint: dict) -> tuple[dict, list[str]]:
    """The state dict timm takes from a checkpoint, and the wrapper keys around it; _BadContent
    for a wrapper that is no dict."""
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
    return state, where


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


@functools.cache
def _model_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """The parameter and buffer shapes of a backbone, from a weightless build on the meta device
    ({} when that build fails: ranks then go unchecked, and loading reports what does not fit)."""
    from bench.backbone_config import meta_build

    try:
        model = meta_build(backbone)
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
