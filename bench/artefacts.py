"""What a finished cell trained, kept beside its record: `<run id>.trainable.safetensors` (every
tensor with requires_grad, as the model stood when its test logits were recorded: the selected
epoch's weights) and, for a method injected by HF peft, `<run id>.adapter/` in peft's own format
(adapter_config.json + adapter_model.safetensors, `PeftModel.from_pretrained` reads it).

As with the predictions (bench.predictions), bench.harness.run_cell hands the tensors over under
PENDING and bench.records.save_record writes them before the record, each file whole or not at
all, and names them in the record's `artefacts` entry with their sizes and sha256. bench.export
rebuilds the model from them."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.backbones import BackboneSource, create_backbone, file_sha256
from bench.config import CellConfig
from bench.errors import UserError
from bench.records import write_atomic

log = logging.getLogger(__name__)

SUFFIX = ".trainable.safetensors"
ADAPTER_SUFFIX = ".adapter"
# The key under which run_cell hands a finished cell's `Trained` to save_record, which pops it.
PENDING = "pending_artefacts"
# peft's name for the one adapter inject_adapter_in_model creates.
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class Trained:
    """A finished cell's trainable tensors (on the CPU, by parameter name) and what its peft
    adapter folder needs: the injected config and how to build a bare backbone to wrap."""

    tensors: dict[str, torch.Tensor]
    cell: CellConfig
    source: BackboneSource
    num_classes: int
    head: str  # a peft model's classifier module name (its `modules_to_save`); "" otherwise
    peft_config: Any = None  # the injected peft.PeftConfig; None for any other method


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter with requires_grad, detached, contiguous, on the CPU (a view of the
    model's own storage on CPU: the model is dropped once the cell ends)."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def trained(
    model: nn.Module, cell: CellConfig, source: BackboneSource, num_classes: int
) -> Trained:
    """What save_record writes of a finished cell's model (see `Trained`)."""
    configs = getattr(model, "peft_config", None)  # set on the model by peft's injection
    config = configs.get(ADAPTER_NAME) if isinstance(configs, dict) else None
    head = ""
    if config is not None:  # peft injects into the timm model itself, which names its head
        classifier = model.get_classifier()
        head = next(name for name, m in model.named_modules() if m is classifier)
    return Trained(trainable_tensors(model), cell, source, num_classes, head, config)


def trainable_path(results: Path, run_id: str) -> Path:
    return results / f"{run_id}{SUFFIX}"


def adapter_path(results: Path, run_id: str) -> Path:
    return results / f"{run_id}{ADAPTER_SUFFIX}"


def write_pending_artefacts(
    results: Path, record: dict[str, Any], pending: Trained | None, *, enabled: bool
) -> None:
    """Write what a record's cell trained (`pending`, popped from it under PENDING; None:
    nothing to do) and describe it in the record's `artefacts` entry. With `enabled` off
    (--no-artefacts) the entry says so and nothing is written; a file that cannot be written
    leaves the reason in the entry, and the record is saved all the same: its metrics stand."""
    if pending is None:
        return
    if not enabled:
        record["artefacts"] = {"trainable": None, "reason": "--no-artefacts"}
        return
    run_id = record["run_id"]
    path = trainable_path(results, run_id)
    try:
        entry: dict[str, Any] = {"trainable": save_tensors(path, pending.tensors)}
    except (OSError, ValueError) as exc:
        log.warning("%s: the trained tensors were not saved (%s)", path, _why(exc))
        record["artefacts"] = {
            "trainable": None,
            "error": f"could not write {path.name}: {_why(exc)}",
        }
        return
    entry["tensors"] = len(pending.tensors)
    entry["params"] = sum(t.numel() for t in pending.tensors.values())
    # A --no-pretrained backbone is a seeded random init, not a file: bench.export rebuilds it
    # from the cell's seed, and only on the torch and timm versions the run used.
    entry["frozen"] = "pretrained" if pending.source.pretrained else "seeded-init"
    if pending.peft_config is not None:
        folder = adapter_path(results, run_id)
        try:
            entry["adapter"] = save_adapter(pending, folder)
        except Exception as exc:  # whatever peft raises, the record and its tensors are kept
            log.warning("%s: the peft adapter was not saved (%s)", folder, _why(exc))
            entry["adapter"] = None
            entry["adapter_error"] = f"could not write {folder.name}: {_why(exc)}"
    record["artefacts"] = entry


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Write `tensors` as safetensors at `path`, whole or not at all; the record's description
    of the file (name, bytes, sha256)."""
    from safetensors.torch import save

    write_atomic(path, save(dict(tensors)))
    return describe_file(path)


def describe_file(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_folder_atomic(final: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a temp folder beside `final` (`.<name>.<random>.tmp`), fsync its files, then rename
    it into place: a crash leaves the old folder or the new one, never half of either."""
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    old = None
    try:
        fill(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                with path.open("rb") as f:
                    os.fsync(f.fileno())
        if final.exists():
            # a folder cannot be renamed over a non-empty one: move the old one aside first
            old = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def peft_names(tensors: Mapping[str, Any], head: str) -> dict[str, str]:
    """Injected-model parameter name -> the same tensor's name in a `PeftModel` built with
    `modules_to_save=[head]`: peft nests the model under `base_model.model.` and trains a copy
    of the head under `modules_to_save.<adapter>`."""
    out = {}
    for name in tensors:
        if name.startswith(head + "."):
            rest = name[len(head) :]
            out[name] = f"base_model.model.{head}.modules_to_save.{ADAPTER_NAME}{rest}"
        else:
            out[name] = f"base_model.model.{name}"
    return out


def save_adapter(trained_: Trained, folder: Path) -> dict[str, Any]:
    """`PeftModel.save_pretrained(folder)` of the trained adapter and head, written atomically;
    the record's description of the folder. The run injected its tuner without a PeftModel
    (methods/peft_inject.py), so one is built here on a bare backbone of the same architecture
    (the adapter file holds adapter and head tensors only), with the head as a module to save,
    and given the trained tensors. ValueError when they do not fit it exactly. LoRA's q/v form
    (`targets=q,v`) names the split qkv's layers: load it onto a backbone split the same way
    (`methods.qkv_split.split_qkv`)."""
    from peft import get_peft_model

    from methods.qkv_split import names_split_layers, split_qkv  # inner: `methods` loads peft

    config = copy.deepcopy(trained_.peft_config)
    config.modules_to_save = [trained_.head]
    config.base_model_name_or_path = trained_.source.name
    bare = dataclasses.replace(trained_.source, pretrained=False, weights=None, weights_sha256=None)
    cell = trained_.cell
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(cell.seed)
        base = create_backbone(bare, num_classes=trained_.num_classes, img_size=cell.img_size)
    if names_split_layers(trained_.tensors):
        # LoRA's q/v form trained q, k, v Linears split out of qkv: the adapter's targets name
        # them, so the base it is saved against (and loaded onto) is split the same way
        split_qkv(base)
    with warnings.catch_warnings():
        # peft warns about module types it does not list (timm's LayerNorm) and CUDA extensions
        # it cannot build; the run that trained these tensors heard the same
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(base, config, adapter_name=ADAPTER_NAME)
    names = peft_names(trained_.tensors, trained_.head)
    wanted = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    if set(names.values()) != wanted:
        odd = sorted(set(names.values()) ^ wanted)[:4]
        raise ValueError(f"the trained tensors do not map onto peft's adapter ({', '.join(odd)})")
    peft_model.load_state_dict({names[k]: v for k, v in trained_.tensors.items()}, strict=False)

    def fill(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp))

    write_folder_atomic(folder, fill)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {"folder": folder.name, "files": [describe_file(p) for p in files]}


# ------------------------------------------------------------------------- reading them back


def load_trainable(results: Path, record: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The trainable tensors a record names, from the file beside it, checked against the
    record's sha256. UserError says what to do when there are none or they are not the run's."""
    run_id = record["run_id"]
    rerun = "rerun its cell with `bench run ... --force` (artefacts are on by default)"
    entry = record.get("artefacts")
    if not isinstance(entry, dict):
        raise UserError(f"run {run_id} kept no trained tensors (its record predates them); {rerun}")
    described = entry.get("trainable")
    if not isinstance(described, dict):
        why = entry.get("reason") or entry.get("error") or "not saved"
        raise UserError(f"run {run_id} kept no trained tensors ({why}); {rerun}")
    path = trainable_path(results, run_id)
    if described.get("file") != path.name or not path.is_file():
        raise UserError(f"{path} is missing; {rerun}")
    if file_sha256(path) != described.get("sha256"):
        raise UserError(f"{path} is not the file its record names (sha256 differs); {rerun}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); {rerun}") from exc


def apply_trainable(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Copy `tensors` into `model`'s trainable parameters, strictly: every trainable parameter
    present, no other name, every shape the same; UserError naming `what` otherwise."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    wrong = sorted(n for n in set(params) & set(tensors) if params[n].shape != tensors[n].shape)
    for label, names in (("lacks", missing), ("has tensors the model does not train:", extra),
                         ("has other shapes for", wrong)):  # fmt: skip
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            raise UserError(
                f"{what} {label} {shown}: it was not saved by this model's run (another method, "
                "backbone or suite version); rerun the cell with --force"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
