"""A finished run's model, rebuilt from its record and saved trainable tensors (bench.artefacts):
`load_adapted` for Python, `export_run` for `bench export`, `load_export` to read an export.

The rebuild is the run's own: the record's cell through bench.harness.build_model (backbone,
same pretrained weights, checked against the record's sha256; then the method), under the cell's
seed as run_cell seeds it, then the saved tensors strictly in place of the trainable ones. The
model maps images (after `Rebuilt.preprocess.evaluation`) to the logits the run recorded, also
for methods that trained on cached frozen features: their forward runs the frozen part too.

A `--no-pretrained` run's frozen backbone is a seeded random init, not a file: it is rebuilt
from the seed, which gives the same tensors only with the torch and timm versions the run used,
so a rebuild under other versions is refused."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.artefacts import (
    Trained,
    apply_trainable,
    load_trainable,
    save_adapter,
    trained,
    write_folder_atomic,
)
from bench.backbones import BackboneSource, resolve_backbone
from bench.config import CellConfig
from bench.errors import UserError
from bench.export_checks import SPEC_FILE, check_out_folder, finished_record, out_folder
from bench.harness import build_model
from bench.transforms import Preprocess
from bench.weights import DEMO_BACKBONE

EXPORT_FORMAT = 1
MODEL_FILE = "model.safetensors"
ADAPTER_FOLDER = "adapter"


@dataclass(frozen=True)
class Rebuilt:
    """A run's model rebuilt (CPU, eval mode), its evaluation input pipeline, and its record."""

    model: nn.Module
    preprocess: Preprocess  # `preprocess.evaluation(uint8 [B,C,H,W])` -> the model's input
    record: dict[str, Any]
    cell: CellConfig
    source: BackboneSource


def rebuild(
    run_id: str, results: Path = Path("results"), *, weights: Path | None = None
) -> Rebuilt:
    """Rebuild run `run_id` of `results` (see the module docstring). `weights`: where the
    pretrained weights file is now, when it moved since the run (its sha256 is still checked)."""
    record = finished_record(run_id, results)
    tensors = load_trainable(results, record)
    try:
        cell = CellConfig(**record["config"])
    except TypeError as exc:
        raise UserError(
            f"run {run_id}: its config is not one this suite version builds ({exc})"
        ) from None
    source = _source(record, weights)
    model, cfg = _build(cell, source, record["dataset"]["num_classes"])
    apply_trainable(model, tensors, what=f"{results / run_id}.trainable.safetensors")
    prep = Preprocess.for_backbone(cfg, img_size=cell.img_size, augment=cell.augment)
    return Rebuilt(model.eval(), prep, record, cell, source)


def load_adapted(
    run_id: str, results: Path = Path("results"), *, weights: Path | None = None
) -> nn.Module:
    """The adapted model of run `run_id`, as it produced its recorded test logits."""
    return rebuild(run_id, results, weights=weights).model


def _build(cell: CellConfig, source: BackboneSource, num_classes: int) -> tuple[nn.Module, dict]:
    """build_model under the cell's seed, as run_cell seeds it: a random frozen init (and any
    frozen random tensor a method draws) comes out the same; the caller's random stream stays."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cell.seed)
        model, *_, cfg = build_model(cell, source, num_classes)
    return model, cfg


def _source(record: dict[str, Any], weights: Path | None) -> BackboneSource:
    """The record's backbone weights, found again and checked against its sha256."""
    entry, run_id = record["backbone"], record["run_id"]
    if not entry["pretrained"]:
        _same_versions(record)
        return resolve_backbone(entry["name"], pretrained=False, weights=None, progress=False)
    path = weights or (Path(entry["weights"]) if entry.get("weights") else None)
    if (
        path is not None
        and entry["name"] == DEMO_BACKBONE
        and weights is None
        and not path.is_file()
    ):
        path = None  # the demo weights are rebuilt into the cache, then checked below
    source = resolve_backbone(entry["name"], pretrained=True, weights=path, progress=False)
    recorded = entry.get("weights_sha256")
    if recorded and source.weights_sha256 != recorded:
        raise UserError(
            f"the weights at {source.weights} are not the ones run {run_id} trained on (sha256 "
            f"{source.weights_sha256} != {recorded}); pass --weights PATH to the file it used"
        )
    return source


def _same_versions(record: dict[str, Any]) -> None:
    env = record.get("env") or {}
    ran = {"torch": env.get("torch_version"), "timm": env.get("timm_version")}
    # the distributions' versions, as bench.measure.environment records them
    here = {name: importlib.metadata.version(name) for name in ("torch", "timm")}
    if ran != here:
        raise UserError(
            f"run {record['run_id']} trained on a random backbone init (--no-pretrained), "
            f"rebuilt from its seed only with the versions it ran with ({ran}); this install "
            f"has {here}. Rebuild it there, or rerun the cell here with --force"
        )


# ------------------------------------------------------------------------------- exports


def export_run(
    run_id: str,
    results: Path = Path("results"),
    out: Path | None = None,
    *,
    weights: Path | None = None,
) -> Path:
    """Write a self-contained export of run `run_id` to `out` (default exports/<run id>), whole
    or not at all: the adapted model's whole state dict (model.safetensors), how to build it
    (model.json, read by `load_export`) and, for a peft method, `adapter/` for
    `PeftModel.from_pretrained` or `push_to_hub`. Returns the folder."""
    out = out_folder(run_id, out)
    check_out_folder(out)
    built = rebuild(run_id, results, weights=weights)
    kept: Trained = trained(
        built.model, built.cell, built.source, built.record["dataset"]["num_classes"]
    )

    def fill(folder: Path) -> None:
        from safetensors.torch import save_file

        # cloned: safetensors refuses tensors that share memory; each name gets its own copy
        state = {k: v.detach().contiguous().clone() for k, v in built.model.state_dict().items()}
        save_file(state, str(folder / MODEL_FILE), metadata={"run_id": run_id})
        if kept.peft_config is not None:
            save_adapter(kept, folder / ADAPTER_FOLDER)
        spec = _spec(built, adapter=kept.peft_config is not None)
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_folder_atomic(out, fill)


def _spec(built: Rebuilt, *, adapter: bool) -> dict[str, Any]:
    """model.json: what the export holds and everything `load_export` needs to build it."""
    rec = built.record
    return {
        "format": EXPORT_FORMAT,
        "run_id": rec["run_id"],
        "method": built.cell.method,
        "hparams": built.cell.hparams,
        "backbone": rec["backbone"],
        "num_classes": rec["dataset"]["num_classes"],
        "classes": rec["dataset"]["classes"],
        "img_size": built.cell.img_size,
        "normalization": {"mean": list(built.preprocess.mean), "std": list(built.preprocess.std)},
        "state_dict": MODEL_FILE,
        "adapter": ADAPTER_FOLDER if adapter else None,
        "test_metrics": (rec.get("metrics") or {}).get("test"),
        "config": rec["config"],  # the cell, for bench.harness.build_model
        "load": "from bench.export import load_export; model = load_export(FOLDER)",
        "input": "uint8 images resized to img_size, scaled to [0, 1], normalised by mean/std "
        "(bench.transforms.Preprocess.evaluation)",
    }


def load_export(folder: Path) -> nn.Module:
    """The model an export holds (eval mode): its architecture built without pretrained weights,
    the method applied, then the whole state dict loaded strictly."""
    from safetensors.torch import load_file

    try:
        spec = json.loads((folder / SPEC_FILE).read_text())
        cell = CellConfig(**spec["config"])
        state = load_file(str(folder / spec["state_dict"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{folder} is not a readable medpeft-bench export ({exc})") from exc
    arch = BackboneSource(spec["backbone"]["name"], pretrained=False, weights=None,
                          weights_sha256=None)  # fmt: skip
    model, _ = _build(dataclasses.replace(cell, pretrained=False), arch, spec["num_classes"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"{folder / spec['state_dict']} does not fit the model it names ({exc})"
        ) from None
    return model.eval()
