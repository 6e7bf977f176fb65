"""The grid: expand (dataset x shots x split seed x method x seed), validate everything before
training, run, record."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import CellConfig, coerce
from bench.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """What the user asked for on the command line, before resolution."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    backbone: str
    weights: str | None = None
    pretrained: bool = True
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    img_size: int | None = None
    device: str = "auto"
    sets: dict[str, dict[str, str]] = field(default_factory=dict)
    results: Path = Path("results")
    data_root: Path | None = None
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    force: bool = False
    shots: list[int] | None = None  # None: full data
    split_seeds: list[int] | None = None  # few-shot samples; default [0]
    augment: str = "rrc-flip"
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    # (dataset, method) -> learning rate: a paper's per-dataset rates (FPT+), from --protocol
    dataset_lr: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class Plan:
    cells: list[CellConfig]
    # data_key(cell) -> LoadedDataset, the few-shot view where the cell has shots (empty in a
    # dry run)
    datasets: dict[tuple, Any]
    source: Any  # BackboneSource
    notes: list[str] = field(default_factory=list)  # shown before the grid runs


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 autocast on GPU (the default there), fp32 on CPU; bf16 on CPU is refused (CPU
    autocast is slow and not what a GPU would measure)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision == "bf16" and not device.startswith("cuda"):
        raise UserError("--precision bf16 is a GPU autocast; on CPU use fp32 (or auto)")
    return precision


def data_key(cell: CellConfig) -> tuple[str, int | None, int]:
    """Cells with the same key train and evaluate on identical splits."""
    return (cell.dataset, cell.shots, cell.split_seed)


def resolve_methods(names: list[str]) -> list[str]:
    """Canonical method names; 'all' means every registered method, 'core' the card's six."""
    from methods import CORE_METHODS, get_method, list_methods

    out: list[str] = []
    for name in names:
        if name == "all":
            expanded = list_methods()
        elif name == "core":
            # Canonical names (fpt -> fpt-plus), so records and run ids do not depend on spelling.
            expanded = [get_method(m).name for m in CORE_METHODS if _known(m)]
        else:
            try:
                expanded = [get_method(name).name]
            except KeyError as exc:
                raise UserError(exc.args[0]) from None
        out += [m for m in expanded if m not in out]
    if not out:
        raise UserError("no methods selected; see `bench list`")
    return out


def _known(name: str) -> bool:
    from methods import get_method

    try:
        get_method(name)
        return True
    except KeyError:
        return False


def resolve_device(device: str) -> str:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device is visible to torch; use --device cpu or auto"
        )
    return device


def method_settings(method: str, req: RunRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, builder hyperparameters) for a method after --lr and --set."""
    from methods import get_method
    from methods.registry import OPTIMIZERS, TRAIN_KEYS

    spec = get_method(method)
    train = dict(spec.train_defaults)
    if req.lr is not None:
        train["lr"] = req.lr
    hparams = dict(spec.hparams)
    for key, raw in req.sets.get(method, {}).items():
        if key in TRAIN_KEYS:
            train[key] = coerce(raw, spec.train_defaults[key], what=f"{method}.{key}")
        elif key in spec.hparams:
            hparams[key] = coerce(raw, spec.hparams[key], what=f"{method}.{key}")
        else:
            valid = ", ".join(sorted(spec.all_defaults))
            raise UserError(
                f"--set {method}.{key}: {method!r} has no hyperparameter {key!r}; valid: {valid}"
            )
    if train["optimizer"] not in OPTIMIZERS:
        raise UserError(
            f"{method}.optimizer={train['optimizer']!r}: expected one of {', '.join(OPTIMIZERS)}"
        )
    if not train["lr"] > 0:
        raise UserError(f"{method}: learning rate must be > 0, got {train['lr']}")
    if train["weight_decay"] < 0:
        raise UserError(f"{method}: weight_decay must be >= 0, got {train['weight_decay']}")
    return train, hparams


def plan(req: RunRequest, *, dry_run: bool = False, progress: bool = True) -> Plan:
    """Resolve and check the whole grid. Raises UserError before any training starts."""
    from bench.backbones import DEMO_BACKBONE, method_img_size, resolve_backbone
    from bench.data import (
        check_available,
        data_root,
        few_shot,
        get_card,
        npz_path,
        stored_image_size,
    )
    from methods import get_method

    methods = resolve_methods(req.methods)
    canonical: dict[str, dict[str, str]] = {}
    for method, values in req.sets.items():
        if not _known(method):
            resolve_methods([method])  # raises the unknown-method error with the list
        name = get_method(method).name
        if name not in methods:
            raise UserError(
                f"--set {method}.…: method {method!r} is not in --methods ({', '.join(methods)})"
            )
        # An alias (--set fpt.lr=…) sets the method it names (fpt-plus).
        canonical.setdefault(name, {}).update(values)
    req.sets = canonical
    if not req.datasets:
        raise UserError("no datasets selected; see `bench list`")
    cards = [get_card(name) for name in req.datasets]
    if not req.seeds or min(req.seeds) < 0:
        raise UserError("--seeds: give one or more integers >= 0, e.g. --seeds 0,1,2")
    if req.epochs is not None and req.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {req.epochs}")
    if req.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {req.batch_size}")
    if req.lr is not None and not req.lr > 0:
        raise UserError(f"--lr must be > 0, got {req.lr}")
    if req.img_size is not None and req.img_size < 8:
        raise UserError(f"--img-size must be >= 8, got {req.img_size}")
    if req.warmup_epochs < 0 or req.grad_clip < 0:
        raise UserError("--warmup-epochs and --grad-clip must be >= 0")
    if req.shots is not None and (not req.shots or min(req.shots) < 1):
        raise UserError("--shots: give one or more integers >= 1, e.g. --shots 1,5,10")
    if req.split_seeds is not None:
        if req.shots is None:
            raise UserError("--split-seeds chooses few-shot samples; it needs --shots")
        if not req.split_seeds or min(req.split_seeds) < 0:
            raise UserError("--split-seeds: give one or more integers >= 0, e.g. 0-4")
    from bench.transforms import get_augmentation

    get_augmentation(req.augment)  # an unknown name fails here, listing the valid ones
    settings = {m: method_settings(m, req) for m in methods}
    device = resolve_device(req.device)
    precision = resolve_precision(req.precision, device)
    root = data_root(req.data_root)
    missing: list[str] = []
    for card in cards:
        try:
            check_available(card, root)
        except UserError:
            if not dry_run:
                raise
            # a dry run lists what is missing instead of stopping at the first absent dataset
            where = npz_path(card, root) if card.format == "medmnist-npz" else card.folder(root)
            missing.append(
                f"missing data: {card.name} (expected {where}; `bench data info {card.name}` "
                "shows the layout and where to get it)"
            )
    _check_results_folder(req.results)

    if dry_run:
        source = resolve_backbone(req.backbone, pretrained=False, weights=None)
        source = type(source)(
            req.backbone, req.pretrained, Path(req.weights) if req.weights else None, None
        )
    else:
        source = resolve_backbone(
            req.backbone, pretrained=req.pretrained, weights=req.weights, progress=progress
        )
    weights_id = source.weights_sha256
    if source.name == DEMO_BACKBONE and req.weights is None and req.pretrained:
        from bench.demo_vit import DEMO_VIT_VERSION

        # The recipe, not the bytes, identifies suite-pretrained weights: float results of the
        # same recipe differ across CPUs, and results folders are shared across machines.
        weights_id = f"recipe:{DEMO_VIT_VERSION}"

    loaded: dict[str, Any] = {}
    if not dry_run:
        loaded = {card.name: _load(card, root, progress) for card in cards}
    shot_grid = [(k, s) for k in req.shots for s in (req.split_seeds or [0])] if req.shots else []
    datasets: dict[tuple, Any] = {}
    for card in cards:
        if card.name not in loaded:
            continue
        if not shot_grid:
            datasets[(card.name, None, 0)] = loaded[card.name]
        for shots, split_seed in shot_grid:
            # Sampling now means too few images for the shots fails before any training.
            datasets[(card.name, shots, split_seed)] = few_shot(
                loaded[card.name], shots, split_seed, root
            )

    def data_size(card) -> int | None:
        # The stored image size decides resolution rules (FPT+ never upsamples past it); a dry
        # run reads it from the file headers, so its run ids match the real run's.
        if card.name in loaded:
            return int(loaded[card.name].splits["train"].images.shape[-1])
        return stored_image_size(card, root)

    cells = []
    for card in cards:
        size = data_size(card)
        for (shots, split_seed), method in itertools.product(shot_grid or [(None, 0)], methods):
            train, hparams = settings[method]
            if (card.name, method) in req.dataset_lr:
                train = {**train, "lr": req.dataset_lr[(card.name, method)]}
            img_size = method_img_size(
                method,
                hparams,
                requested=req.img_size,
                backbone=req.backbone,
                data_size=size,
            )
            for seed in req.seeds:
                cells.append(
                    CellConfig(
                        method=method,
                        dataset=card.name,
                        seed=seed,
                        backbone=req.backbone,
                        pretrained=req.pretrained,
                        weights=str(source.weights) if source.weights else None,
                        weights_sha256=weights_id,
                        epochs=req.epochs or card.epochs,
                        batch_size=req.batch_size,
                        img_size=img_size,
                        device=device,
                        precision=precision,
                        compile=req.compile,
                        warmup_epochs=req.warmup_epochs,
                        grad_clip=req.grad_clip,
                        augment=req.augment,
                        shots=shots,
                        split_seed=split_seed,
                        hparams=hparams,
                        **train,
                    )
                )
    _check_foreign_files(cells, req.results)
    notes: list[str] = list(missing)
    if not dry_run:
        notes = _preflight_builds(cells, datasets, source)
    return Plan(cells=cells, datasets=datasets, source=source, notes=notes)


def training_images(cells: list[CellConfig], datasets: dict[tuple, Any]) -> tuple[int, int]:
    """(images passed through training over the grid where the train size is known, cells whose
    size is unknown): a compute estimate that needs no data. Few-shot samples are K per class."""
    from bench.data import get_card

    known, unknown = 0, 0
    for cell in cells:
        data = datasets.get(data_key(cell))
        if data is not None:
            n = len(data.splits["train"])
        elif cell.shots is not None and not get_card(cell.dataset).reader.get("shot_files"):
            n = cell.shots * len(get_card(cell.dataset).classes)
        else:
            unknown += 1
            continue
        known += n * cell.epochs
    return known, unknown


def _load(card, root: Path, progress: bool):
    """Load (decode, check) one dataset, with a progress bar over its images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.data import load_dataset

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task(f"reading {card.name}", total=None)
        return load_dataset(
            card,
            root,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _check_results_folder(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results} exists and is not a folder")


def _preflight_builds(cells: list[CellConfig], datasets: dict[str, Any], source) -> list[str]:
    """Build each distinct (method, hyperparameters, classes, size) once, so a bad value or a weights
    file that does not fit the architecture fails now rather than cells into the grid. Methods
    that preload frozen features get their disk use estimated and checked; returns notes."""
    from bench.harness import build_model, uses_frozen_features

    seen: set = set()
    notes: list[str] = []
    caches: set = set()
    for cell in cells:
        data = datasets[data_key(cell)]
        key = (cell.method, repr(sorted(cell.hparams.items())), data.num_classes, cell.img_size)
        if key not in seen:
            seen.add(key)
            model, *_, cfg = build_model(cell, source, data.num_classes)
            if uses_frozen_features(model) and model.preload and (key, cell.dataset) not in caches:
                caches.add((key, cell.dataset))
                notes.append(_cache_estimate(model, cell, data, cfg))
    return notes


def _cache_estimate(model, cell: CellConfig, data, cfg: dict) -> str:
    """Disk the frozen-feature cache of one (method, dataset) will take; fails if it won't fit."""
    from bench.feature_cache import (
        MANIFEST,
        bytes_per_image,
        cache_path,
        check_free_space,
        feature_cache_dir,
        human_bytes,
    )
    from bench.harness import feature_identity

    mean, std = cfg.get("mean", (0.5,) * 3), cfg.get("std", (0.5,) * 3)
    per_image = bytes_per_image(model.feature_shapes(), model.cache_dtype)
    total = sum(len(s) for s in data.splits.values()) * per_image
    missing = 0
    for split, part in data.splits.items():
        identity = feature_identity(model, cell, data, split, mean, std)
        if not (cache_path(identity, model.cache_dtype) / MANIFEST).is_file():
            missing += len(part) * per_image
    if missing:
        check_free_space(feature_cache_dir(), missing)
    state = f"{human_bytes(missing)} to write" if missing else "already cached"
    return (
        f"{cell.method} on {cell.dataset}: frozen-feature cache of {human_bytes(total)} "
        f"({human_bytes(per_image)} per image, {model.cache_dtype}; {state}) in "
        f"{feature_cache_dir()}; --set {cell.method}.preload=false runs without it"
    )


def _check_foreign_files(cells: list[CellConfig], results: Path) -> None:
    """A file at a cell's record path that is not a record is someone else's: never overwrite it."""
    from bench.records import read_record, record_path

    blocked = [
        p
        for p in (record_path(results, c.run_id) for c in cells)
        if p.exists() and read_record(p) is None
    ]
    if blocked:
        raise UserError(
            f"{len(blocked)} file(s) in {results} sit where records go but are not medpeft-bench records "
            f"(first: {blocked[0]}); move them away or choose another --results folder"
        )


@dataclass
class GridOutcome:
    records: list[dict[str, Any]]
    ran: int
    skipped: int
    interrupted: bool = False


def run_grid(plan_: Plan, req: RunRequest, *, console=None, progress: bool = True) -> GridOutcome:
    """Run every unfinished cell; one failing cell never stops the grid. Ctrl-C stops after the
    records already written; a rerun continues with the missing cells."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.harness import run_cell
    from bench.records import finished, write_record

    outcome = GridOutcome(records=[], ran=0, skipped=0)
    todo = []
    for cell in plan_.cells:
        done = None if req.force else finished(req.results, cell.run_id)
        if done is not None:
            outcome.records.append(done)
            outcome.skipped += 1
        else:
            todo.append(cell)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        grid_task = bar.add_task("grid", total=len(todo), info=f"{outcome.skipped} already done")
        try:
            for cell in todo:
                label = _where(cell.to_dict())
                cell_task = bar.add_task(f"  {label}", total=None, info="")

                def on_step(
                    step: int, total: int, loss: float, epoch: int, _t=cell_task, _e=cell.epochs
                ) -> None:
                    bar.update(
                        _t,
                        completed=step,
                        total=total,
                        info=f"epoch {epoch + 1}/{_e} loss {loss:.4f}",
                    )

                def on_preload(split: str, done: int, total: int, _t=cell_task) -> None:
                    bar.update(_t, completed=done, total=total, info=f"preloading {split} features")

                record = run_cell(
                    cell,
                    plan_.datasets[data_key(cell)],
                    plan_.source,
                    on_step=on_step,
                    on_preload=on_preload,
                )
                write_record(req.results, record)
                outcome.records.append(record)
                outcome.ran += 1
                bar.remove_task(cell_task)
                bar.advance(grid_task)
                bar.console.print(_cell_line(record))
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome


def _where(cfg: dict[str, Any]) -> str:
    shots = f" {cfg['shots']}-shot x{cfg['split_seed']}" if cfg.get("shots") else ""
    return f"{cfg['dataset']}{shots}/{cfg['method']}/seed {cfg['seed']}"


def _cell_line(record: dict[str, Any]) -> str:
    cfg = record["config"]
    where = _where(cfg)
    secs = record.get("cost", {}).get("wall_s", 0.0)
    if record["status"] == "ok":
        m = record["metrics"]
        return f"[green]ok[/] {where}: test {m['primary_metric']} {m['primary']:.4f} ({secs:.1f} s)"
    return f"[red]{record['status']}[/] {where}: {record['error']}"
