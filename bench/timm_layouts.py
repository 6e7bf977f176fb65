"""What the early checks know of timm's architectures without importing it: the modules that
build no model the methods can adapt (`bench.backbones.vit_like`: no transformer `blocks` or no
classifier), so `--backbone resnet50` is refused at once, and each ViT-like architecture's depth,
patch size, head width and input size (`bench.backbone_geometry`), so `--set partial.blocks=99`
is too; and where each ViT's pretrained weights come from (its pretrained configs' hub
repository, file or URL), so a real run offline without them fails at once.
`python -m bench.timm_layouts` builds every architecture of the installed timm on the meta device
(a few minutes) and writes `timm_layouts.json` for that timm version; the early checks trust it
only under the same version."""

from __future__ import annotations

import json
import sys
import warnings
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.backbone_geometry import LAYOUTS, model_geometry

# The keys of a timm pretrained config that say where its weights come from.
SOURCE_KEYS = ("hf_hub_id", "hf_hub_filename", "url")


def survey() -> dict[str, Any]:
    """{"not_vit": modules whose every architecture lacks the ViT layout, "vit": {architecture:
    its geometry}, "weights": {name (architecture or 'ARCH.TAG'): where its pretrained weights
    come from (`SOURCE_KEYS` of its pretrained config)}}. An architecture's input size only
    where every pretrained config of it names the size it builds at (a run's native size is its
    pretrained config's). An architecture that does not build without arguments counts as
    ViT-like with no geometry: the full check judges it."""
    import timm
    import torch
    from timm.models import get_arch_name
    from timm.models._registry import _model_to_module

    from bench.backbone_config import backbone_config
    from bench.backbones import vit_like

    layouts: dict[str, list[bool]] = defaultdict(list)
    geometry: dict[str, dict[str, int]] = {}
    weights: dict[str, dict[str, str]] = {}
    for name in timm.list_models():
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                model = timm.create_model(name, pretrained=False)
        except Exception:  # some architectures need arguments: the full check judges them
            model = None
        ok = model is None or vit_like(model)
        if model is not None and ok:
            geometry[name] = model_geometry(model)
            configs = [backbone_config(n) for n in (name, *timm.list_pretrained(f"{name}.*"))]
            if any(c.img_size != geometry[name].get("img_size") for c in configs):
                geometry[name].pop("img_size", None)
            for c in configs:
                weights[c.name] = {k: c.pretrained_cfg[k] for k in SOURCE_KEYS
                                   if c.pretrained_cfg.get(k)}  # fmt: skip
        layouts[_model_to_module[get_arch_name(name)]].append(ok)
    return {
        "not_vit": sorted(m for m, found in layouts.items() if not any(found)),
        "vit": geometry,
        "weights": weights,
    }


def write_layouts(path: Path = LAYOUTS) -> Path:
    data = {"timm": metadata.version("timm"), **survey()}
    path.write_text(json.dumps(data, indent=None, sort_keys=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m bench.timm_layouts
    print(f"wrote {write_layouts()}", file=sys.stderr)
