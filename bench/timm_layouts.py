"""What the early checks know of timm's architectures without importing it: the modules that
build no model the methods can adapt (`bench.backbones.vit_like`: no transformer `blocks` or no
classifier), so `--backbone resnet50` is refused at once, and each ViT-like architecture's depth,
patch size, head width and input size (`bench.backbone_geometry`), so `--set partial.blocks=99`
is too.
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


def survey() -> dict[str, Any]:
    """{"not_vit": modules whose every architecture lacks the ViT layout, "vit": {architecture:
    its geometry}}; its input size only where every pretrained config of the architecture
    names the size it builds at (a run's native size is its pretrained config's). An
    architecture that does not build without arguments counts as ViT-like with no geometry: the
    full check judges it."""
    import timm
    import torch
    from timm.models import get_arch_name
    from timm.models._registry import _model_to_module

    from bench.backbone_config import backbone_config
    from bench.backbones import vit_like

    layouts: dict[str, list[bool]] = defaultdict(list)
    geometry: dict[str, dict[str, int]] = {}
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
            names = (name, *timm.list_pretrained(f"{name}.*"))
            if any(backbone_config(n).img_size != geometry[name].get("img_size") for n in names):
                geometry[name].pop("img_size", None)
        layouts[_model_to_module[get_arch_name(name)]].append(ok)
    return {
        "not_vit": sorted(m for m, found in layouts.items() if not any(found)),
        "vit": geometry,
    }


def write_layouts(path: Path = LAYOUTS) -> Path:
    data = {"timm": metadata.version("timm"), **survey()}
    path.write_text(json.dumps(data, indent=None, sort_keys=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m bench.timm_layouts
    print(f"wrote {write_layouts()}", file=sys.stderr)
