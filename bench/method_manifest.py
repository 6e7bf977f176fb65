"""What the command line needs to know about every registered method before it imports torch:
names, aliases, defaults, the values each hyperparameter may take, what each does, and its
trainable count on the demo backbone. Written
from the registry into `methods_manifest.json` (`python -m bench.method_manifest`), and trusted
only while `methods/*.py` are byte for byte the files it was written from: a method added or
changed since (a user's own file included) sends every caller back to the registry itself.

`bench list methods` reads it to answer at once, and `bench run` checks --methods and --set
against it, so a typo fails in a second rather than after the heavy imports.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).with_name("methods_manifest.json")
METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"
# The backbone and head size of the counts it holds: `bench list methods`' defaults.
COUNT_BACKBONE = "demo-vit"
COUNT_CLASSES = 7


def sources_digest() -> str:
    """SHA-256 over every `*.py` file of the methods folder, names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(METHODS_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_manifest() -> dict[str, Any] | None:
    """The manifest, or None when it is missing, unreadable or written from other method files."""
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("sources") != sources_digest():
        return None
    return data


def unavailable(entry: dict[str, Any]) -> str:
    """Why this install cannot build the method ("" when it can): a peft tuner newer than the
    installed peft, said as the registry says it."""
    need = entry.get("min_peft")
    if not need:
        return ""
    from packaging.version import Version

    try:
        have = metadata.version("peft")
    except metadata.PackageNotFoundError:
        return f"{entry['name']} needs peft >= {need}; peft is not installed"
    # release numbers only, as the registry compares them (a dev build of the release counts)
    if Version(have).release >= Version(need).release:
        return ""
    return f"{entry['name']} needs peft >= {need}; installed {have}: pip install -U 'peft>={need}'"


def build_manifest() -> dict[str, Any]:
    """The manifest from the registry (imports torch, timm and peft; builds every method once on
    the demo backbone, without weights, to count what it trains)."""
    from bench.hparam_limits import to_json
    from bench.method_counts import trainable_counts
    from methods import CORE_METHODS, get_method, list_methods
    from methods.peft_tuners import TUNERS

    min_peft = {row.name: row.min_peft for row in TUNERS}
    names = list_methods(include_unavailable=True)
    available = [n for n in names if not get_method(n, include_unavailable=True).unavailable]
    counts = trainable_counts(available, backbone=COUNT_BACKBONE, num_classes=COUNT_CLASSES)
    methods = []
    for name in names:
        spec = get_method(name, include_unavailable=True)
        methods.append({
            "name": name,
            "aliases": list(spec.aliases),
            "core": name in CORE_METHODS or bool(set(spec.aliases) & set(CORE_METHODS)),
            "optimizer": spec.optimizer,
            "lr": spec.lr,
            "lr_reference_batch": spec.lr_rule.reference_batch if spec.lr_rule else None,
            "weight_decay": spec.weight_decay,
            "trainable": counts.get(name),
            "hparams": dict(spec.hparams),
            "limits": {k: to_json(limit) for k, limit in spec.limits.items()},
            # the method picks its backbone's input size (FPT's high-resolution frozen model)
            "own_input_size": spec.input_size is not None,
            "search": list(spec.search),  # the optimizers it declares a search space for
            "summary": spec.summary,
            "paper": spec.paper,
            "min_peft": min_peft.get(name),
        })  # fmt: skip
    return {
        "sources": sources_digest(),
        "count_backbone": COUNT_BACKBONE,
        "count_classes": COUNT_CLASSES,
        "methods": methods,
    }


def write_manifest(path: Path = MANIFEST) -> Path:
    path.write_text(json.dumps(build_manifest(), indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m bench.method_manifest
    print(f"wrote {write_manifest()}", file=sys.stderr)
