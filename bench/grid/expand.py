"""The grid as cells: a pure function from a checked request and what it resolved to."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from bench.backbones import method_img_size
from bench.config import CellConfig
from bench.grid.request import GridRequest, method_settings
from methods import get_method


@dataclass(frozen=True)
class Resolved:
    """What the request's names resolved to on this machine: everything `expand` needs beyond
    the request itself."""

    device: str
    precision: str
    weights: str | None  # the weights file's path, None for timm's or random weights
    weights_id: str | None  # what identifies the weights in the run id (the file's hash)
    sizes: dict[str, int | None]  # dataset -> stored image size (None: unknown in a dry run)
    epochs: dict[str, int]  # dataset -> its card's default epochs


def data_key(cell: CellConfig) -> tuple[str, int | None, int]:
    """Cells with the same key train and evaluate on identical splits."""
    return (cell.dataset, cell.shots, cell.split_seed)


def expand(req: GridRequest, resolved: Resolved) -> list[CellConfig]:
    """Every cell of the grid, in the order it runs: dataset, (shots, split seed), method, seed.
    `req` must be `checked()`."""
    settings = {m: method_settings(m, req) for m in req.methods}
    cells = []
    for dataset in req.datasets:
        for (shots, split_seed), method in itertools.product(req.shot_grid, req.methods):
            train, hparams = settings[method]
            if (dataset, method) in req.dataset_lr:
                train = {**train, "lr": req.dataset_lr[(dataset, method)]}
            img_size = method_img_size(method, hparams, requested=req.img_size,
                                       backbone=req.backbone, data_size=resolved.sizes[dataset])  # fmt: skip
            cells += [
                CellConfig(
                    method=method,
                    dataset=dataset,
                    seed=seed,
                    backbone=req.backbone,
                    pretrained=req.pretrained,
                    weights=resolved.weights,
                    weights_sha256=resolved.weights_id,
                    epochs=req.epochs or resolved.epochs[dataset],
                    batch_size=req.batch_size,
                    img_size=img_size,
                    device=resolved.device,
                    precision=resolved.precision,
                    compile=req.compile,
                    augment=req.augment,
                    shots=shots,
                    split_seed=split_seed,
                    hparams=hparams,
                    **train,
                )
                for seed in req.seeds
            ]
    return cells


def annotations(req: GridRequest, cells: list[CellConfig]) -> dict[str, dict[str, Any]]:
    """run id -> what the cell's record says about how its hyperparameters were chosen."""
    return {
        cell.run_id: {
            "hyperparameters": fixed_regime(
                cell.method,
                req,
                batch_size=req.batch_size,
                lr=cell.lr,
                protocol_lr=(cell.dataset, cell.method) in req.dataset_lr
                or "lr" in req.method_train.get(cell.method, {}),
            )
        }
        for cell in cells
    }


def lr_note(lr: float, *, rule: Any = None, base: float | None = None, batch_size: int) -> dict:
    """How a cell's learning rate came about: the effective value, and the scaling rule and base
    value when a declared rule produced it (None otherwise)."""
    return {
        "effective": lr,
        "rule": rule.describe() if rule is not None else None,
        "base": base if rule is not None else None,
        "batch_size": batch_size,
    }


def fixed_regime(
    method: str, req: GridRequest, *, batch_size: int, lr: float, protocol_lr: bool
) -> dict[str, Any]:
    """The record's `hyperparameters` entry for a cell whose values were fixed before training:
    where they came from (method defaults, --set/--lr, a protocol's pinned rate) and its lr."""
    spec = get_method(method)
    sets = sorted(req.sets.get(method, {}))
    sources = []
    if req.protocol:
        sources.append(f"protocol {req.protocol}")
    if protocol_lr:
        sources.append("the paper's lr")
    if req.lr is not None:
        sources.append("--lr")
    if sets:
        sources.append("--set " + ",".join(sets))
    lr_given = protocol_lr or req.lr is not None or "lr" in sets
    rule = spec.lr_rule if not lr_given else None
    return {
        "regime": "fixed",
        "source": "; ".join(sources) or "method defaults",
        "lr": lr_note(lr, rule=rule, base=spec.lr, batch_size=batch_size),
    }
