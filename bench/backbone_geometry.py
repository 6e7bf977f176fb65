"""A backbone's shape as hyperparameter limits (`Number(at_most="depth")`) and the weights check
read it: its number of transformer blocks, patch size, embedding width, width of one attention
head and input size. From a built model, or before torch is imported from the name: demo-vit's
constants, or a timm architecture's entry in `timm_layouts.json` (written by
`python -m bench.timm_layouts` for one timm version). Torch-free."""

from __future__ import annotations

import functools
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.backbone_config import hub_repo
from bench.weights import DEMO_BACKBONE

LAYOUTS = Path(__file__).with_name("timm_layouts.json")
# The demo backbone's timm build arguments (bench.demo_vit builds and pretrains it).
DEMO_VIT_KWARGS: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 96,
    "depth": 4,
    # Head dim 16: six heads learnt the cross-patch relations (alignment, rims) much faster
    # than three at the same cost; a narrow MLP cut the time by a quarter at no loss.
    "num_heads": 6,
    "mlp_ratio": 2.0,
}

Geometry = dict[str, int]  # "depth", "patch", "width", "head_dim", "img_size"


def model_geometry(model: Any) -> Geometry:
    """The shape of a built timm ViT (what it lacks is left out); "img_size": the shorter side
    of the input it was built for."""
    out: Geometry = {}
    if hasattr(model, "blocks"):
        out["depth"] = len(model.blocks)
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if patch is not None:
        out["patch"] = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    size = getattr(embed, "img_size", None)
    if size is not None:
        out["img_size"] = int(min(size) if isinstance(size, (tuple, list)) else size)
    if isinstance(getattr(model, "embed_dim", None), int):  # a list in multi-stage models
        out["width"] = model.embed_dim
    attn = getattr(model.blocks[0], "attn", None) if out.get("depth") else None
    if hasattr(attn, "num_heads") and "width" in out:
        out["head_dim"] = out["width"] // int(attn.num_heads)
    return out


@functools.cache
def timm_layouts() -> dict[str, Any]:
    """`timm_layouts.json` when it was written for the installed timm; empty otherwise."""
    try:
        data = json.loads(LAYOUTS.read_text(encoding="utf-8"))
        same = data["timm"] == metadata.version("timm")
    except (OSError, ValueError, KeyError, metadata.PackageNotFoundError):
        return {}
    return data if same else {}


def named_geometry(name: str) -> Geometry | None:
    """The shape of --backbone `name` without building it ("img_size": its native input size,
    its pretrained config's); None when it cannot be told here (a hub model, a timm
    version the layouts were not written for)."""
    if name == DEMO_BACKBONE:
        kwargs = DEMO_VIT_KWARGS
        head_dim = kwargs["embed_dim"] // kwargs["num_heads"]
        return {"depth": kwargs["depth"], "patch": kwargs["patch_size"], "head_dim": head_dim,
                "width": kwargs["embed_dim"], "img_size": kwargs["img_size"]}  # fmt: skip
    if hub_repo(name) is not None:
        return None
    return timm_layouts().get("vit", {}).get(name.split(".", 1)[0])


def cell_geometry(name: str, *, own_input_size: bool, img_size: int | None) -> Geometry | None:
    """The shape of the model a method is built on: `named_geometry`, at --img-size when given;
    without the input size when the method chooses its own (FPT's high-resolution rule)."""
    geometry = dict(named_geometry(name) or {})
    if own_input_size:
        geometry.pop("img_size", None)
    elif img_size is not None:
        geometry["img_size"] = img_size
    return geometry or None
