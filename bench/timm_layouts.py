"""Which timm modules build no model the methods can adapt (`bench.backbones.vit_like`: no
transformer `blocks` or no classifier), so `--backbone resnet50` is refused before timm is
imported. `python -m bench.timm_layouts` builds every architecture of the installed timm on the
meta device (a few minutes) and writes `timm_not_vit.json` for that timm version;
bench.backbone_options trusts the file only under the same version."""

from __future__ import annotations

import json
import sys
import warnings
from collections import defaultdict
from importlib import metadata
from pathlib import Path

from bench.backbone_options import NOT_VIT


def module_layouts() -> dict[str, list[bool]]:
    """For each timm module (its name under timm.models), whether each architecture it registers
    builds a ViT-like model; an architecture that does not build counts as ViT-like (never
    refused early: the full check decides)."""
    import timm
    import torch
    from timm.models import get_arch_name
    from timm.models._registry import _model_to_module

    from bench.backbones import vit_like

    layouts: dict[str, list[bool]] = defaultdict(list)
    for name in timm.list_models():
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                ok = vit_like(timm.create_model(name, pretrained=False))
        except Exception:  # some architectures need arguments: the full check judges them
            ok = True
        layouts[_model_to_module[get_arch_name(name)]].append(ok)
    return dict(layouts)


def write_not_vit(path: Path = NOT_VIT) -> Path:
    layouts = module_layouts()
    modules = sorted(m for m, found in layouts.items() if not any(found))
    data = {"timm": metadata.version("timm"), "modules": modules}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m bench.timm_layouts
    print(f"wrote {write_not_vit()}", file=sys.stderr)
