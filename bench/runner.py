"""The grid: expand (dataset x shots x split seed x method x seed), validate everything before
training, run, record."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
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
    oom_retry: bool = False  # retry an oom cell at half the batch size, down to 1
    stale_claim_s: float | None = None  # None: $MEDPEFT_STALE_CLAIM_HOURS, else 24 h
    protocol: str | None = None  # the --protocol that filled this request, if any
    tune: Any = None  # bench.tuning.TuneRequest: search each method's space first (bench tune)


@dataclass
class Plan:
    cells: list[CellConfig]
    # data_key(cell) -> LoadedDataset, the few-shot view where the cell has shots (empty in a
    # dry run)
    datasets: dict[tuple, Any]
    source: Any  # BackboneSource
    notes: list[str] = field(default_factory=list)  # shown before the grid runs
    # run id -> fields added to that cell's record (how its hyperparameters were chosen)
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # dataset -> stored image size (None when unknown in a dry run): FPT+'s resolution rule
    data_sizes: dict[str, int | None] = field(default_factory=dict)


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
    # A method that declares its lr for a reference batch (VPT: base x batch/256) gets it scaled
    # to this batch size; --lr and --set give the rate used as it is.
    train = {**spec.train_defaults, "lr": spec.default_lr(req.batch_size)}
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
    import math

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
        try:  # 'all' and 'core' are --methods shorthands, not methods a --set can address
            name = get_method(method).name
        except KeyError as exc:
            raise UserError(f"--set {method}.…: {exc.args[0]}") from None
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
    if req.lr is not None and not 0 < req.lr < math.inf:
        raise UserError(f"--lr must be > 0 and finite, got {req.lr}")
    if req.img_size is not None and req.img_size < 8:
        raise UserError(f"--img-size must be >= 8, got {req.img_size}")
    # NaN fails every comparison, so `x < 0` would let it through; `not 0 <= x` does not
    if not (0 <= req.warmup_epochs < math.inf and 0 <= req.grad_clip < math.inf):
        raise UserError(
            "--warmup-epochs and --grad-clip must be >= 0 and finite, got "
            f"{req.warmup_epochs} and {req.grad_clip}"
        )
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
    _check_results_folder(req.results, write=not dry_run)

    if dry_run:
        source = resolve_backbone(req.backbone, pretrained=False, weights=None)
        weights, digest = Path(req.weights).expanduser() if req.weights else None, None
        if weights is not None:
            from bench.backbones import file_sha256
            from bench.weights import check_weights_file

            # Checked (safely) and hashed as a real run would: a bad file fails the dry run too,
            # and the listed run ids, hence done/to run, are the real ones.
            check_weights_file(weights, req.backbone)
            digest = file_sha256(weights)
        source = type(source)(req.backbone, req.pretrained, weights, digest)
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
    annotations: dict[str, dict[str, Any]] = {}
    sizes = {card.name: data_size(card) for card in cards}
    for card in cards:
        size = sizes[card.name]
        for (shots, split_seed), method in itertools.product(shot_grid or [(None, 0)], methods):
            train, hparams = settings[method]
            pinned_lr = (card.name, method) in req.dataset_lr
            if pinned_lr:
                train = {**train, "lr": req.dataset_lr[(card.name, method)]}
            regime = fixed_regime(method, req, batch_size=req.batch_size, lr=train["lr"],
                                  protocol_lr=pinned_lr)  # fmt: skip
            img_size = method_img_size(
                method,
                hparams,
                requested=req.img_size,
                backbone=req.backbone,
                data_size=size,
            )
            for seed in req.seeds:
                cells.append(
                    cell := CellConfig(
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
                annotations[cell.run_id] = {"hyperparameters": regime}
    _check_foreign_files(cells, req.results)
    notes: list[str] = list(missing)
    if not dry_run:
        notes = preflight_builds(cells, datasets, source)
    return Plan(cells=cells, datasets=datasets, source=source, notes=notes,
                annotations=annotations, data_sizes=sizes)  # fmt: skip


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
    method: str, req: RunRequest, *, batch_size: int, lr: float, protocol_lr: bool
) -> dict[str, Any]:
    """The record's `hyperparameters` entry for a cell whose values were fixed before training:
    where they came from (method defaults, --set/--lr, a protocol's pinned rate) and its lr."""
    from methods import get_method

    spec = get_method(method)
    sets = sorted(req.sets.get(method, {}))
    sources = []
    if req.protocol:
        sources.append(f"protocol {req.protocol}")
    if protocol_lr:
        sources.append("the paper's per-dataset lr")
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
    from bench.console import progress_bar
    from bench.data import load_dataset

    with progress_bar(show=progress) as bar:
        task = bar.add_task(f"reading {card.name}", total=None)
        return load_dataset(
            card,
            root,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _check_results_folder(results: Path, *, write: bool) -> None:
    """The results folder is a folder; for a real run, one this process can write records and
    claims into (checked by writing, which also covers a read-only mount and a full disk)."""
    import uuid

    from bench.claims import claims_dir

    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results} exists and is not a folder")
    if not write:
        return
    claims = claims_dir(results)
    if claims.exists() and not claims.is_dir():
        raise UserError(
            f"{claims} is a file; runners keep their claims in that folder: move the file away"
        )
    probe = results / f".write-check.{uuid.uuid4().hex[:8]}.tmp"
    # folders made only for the check are removed again: bad input later leaves nothing behind
    made = list(itertools.takewhile(lambda d: not d.exists(), [results, *results.parents]))
    try:
        results.mkdir(parents=True, exist_ok=True)
        # a record's size: a full disk fails here, not after training
        probe.write_bytes(b"0" * 4096)
    except OSError as exc:
        raise UserError(
            f"cannot write records in --results {results}: {exc.strerror or exc}; choose a "
            "writable folder with free space"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
            for folder in made:
                folder.rmdir()


def preflight_builds(cells: list[CellConfig], datasets: dict[str, Any], source) -> list[str]:
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
    from bench.cache_dirs import check_cache_writable
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
        check_cache_writable(feature_cache_dir())
        check_free_space(feature_cache_dir(), missing)
    state = f"{human_bytes(missing)} to write" if missing else "already cached"
    return (
        f"{cell.method} on {cell.dataset}: frozen-feature cache of {human_bytes(total)} "
        f"({human_bytes(per_image)} per image, {model.cache_dtype}; {state}) in "
        f"{feature_cache_dir()}; --set {cell.method}.preload=false runs without it"
    )


def _check_foreign_files(cells: list[CellConfig], results: Path) -> None:
    """A file at a cell's record path that is not this cell's record (not a record at all, or
    another cell's) is someone else's: never overwrite it, never count it as the cell's."""
    from bench.records import read_record, record_path

    blocked = [
        p
        for p, run_id in ((record_path(results, c.run_id), c.run_id) for c in cells)
        if p.exists() and read_record(p, run_id=run_id) is None
    ]
    if blocked:
        raise UserError(
            f"{len(blocked)} file(s) in {results} sit where records go but are not medpeft-bench records "
            f"of those cells (first: {blocked[0]}); move them away or choose another --results "
            "folder"
        )


@dataclass
class GridOutcome:
    records: list[dict[str, Any]]
    ran: int
    skipped: int
    interrupted: bool = False
    busy: int = 0  # cells a live runner elsewhere holds: left to it, not run here


class _Sigint:
    """Ctrl-C for the grid's duration: the first raises KeyboardInterrupt, held back while a
    critical step (claiming, writing a record, releasing) finishes; the second ends the process
    at once with status 130, whatever it is doing. SIGTERM (scancel, kill, a launcher stopping
    its workers) stops the grid as the first Ctrl-C does; a repeated SIGTERM is ignored, since
    scancel and a launcher may each send one. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.count = 0
        self.depth = 0
        self.pending = False
        self.terminated = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Sigint:
        # Python lets only the main thread set handlers; elsewhere the signals keep theirs.
        if threading.current_thread() is threading.main_thread():
            self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle_term)
        return self

    def __exit__(self, *exc: object) -> None:
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, old in self._old.items():
            # None: the old handler was not set from Python; the default is the closest
            signal.signal(signum, old if old is not None else defaults[signum])

    def _handle_term(self, signum: int, frame: Any) -> None:
        if not self.terminated:
            self.terminated = True
            self._handle(signum, frame)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            _hard_exit()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _say(f"\n{name}: stopping; finished cells are saved (Ctrl-C again stops at once)\n")
        if self.depth:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A step that must not be cut in half by the first Ctrl-C (it is raised right after)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


def _say(text: str) -> None:
    # Signal handlers print with os.write: the console may be mid-write in the interrupted code.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _hard_exit() -> None:
    _say("Ctrl-C again: stopped at once (the cell in progress has no record)\n")
    with contextlib.suppress(OSError):
        if os.isatty(1):
            os.write(1, b"\x1b[?25h")  # the progress bars hide the cursor; give it back
    os._exit(130)


def _about(cell: CellConfig) -> dict[str, Any]:
    """What a claim says about its cell, for `bench status`."""
    keys = ("dataset", "method", "seed", "shots", "split_seed", "backbone")
    return {k: getattr(cell, k) for k in keys}


def _stamp(results: Path, run_id: str) -> tuple[int, int] | None:
    """Identity of the record file now (a rewrite is a new inode and mtime), None if absent."""
    from bench.records import record_path

    try:
        st = record_path(results, run_id).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _done(req: RunRequest, run_id: str) -> dict[str, Any] | None:
    """The record that makes this cell finished for this request, if any."""
    from bench.records import finished

    rec = None if req.force else finished(req.results, run_id)
    if rec is not None and req.oom_retry and rec.get("status") == "oom":
        tried = rec.get("oom_retries") or [(rec.get("config") or {}).get("batch_size")]
        if tried[-1] != 1:
            return None  # --oom-retry asks for smaller batches than this record tried
    return rec


def _free_device_memory(device: str) -> None:
    """Drop what the failed attempt left (its traceback's frames hold tensors) before a retry."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_with_oom_retry(
    run_cell: Callable[..., dict[str, Any]],
    cell: CellConfig,
    *args: Any,
    retry: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run a cell; with `retry`, an `oom` result is retried at half the batch size, down to 1.
    The record keeps the requested cell (config, run id) and lists the batch sizes tried in
    `oom_retries`; a cell that then trains says the one it used in `training.batch_size_used`."""
    record = run_cell(cell, *args, **kwargs)
    if not retry or record.get("status") != "oom":
        return record
    tried = [cell.batch_size]
    while record.get("status") == "oom" and tried[-1] > 1:
        _free_device_memory(cell.device)
        smaller = dataclasses.replace(cell, batch_size=max(1, tried[-1] // 2))
        tried.append(smaller.batch_size)
        record = run_cell(smaller, *args, **kwargs)
    record["run_id"] = cell.run_id
    record["config"] = cell.to_dict()
    record["oom_retries"] = tried
    if isinstance(record.get("training"), dict):
        record["training"]["batch_size_used"] = tried[-1]
    return record


def run_grid(
    plan_: Plan,
    req: RunRequest,
    *,
    console=None,
    progress: bool = True,
    run_cell: Callable[..., dict[str, Any]] | None = None,
    only: set[str] | None = None,
) -> GridOutcome:
    """Run every unfinished cell that no live runner holds; one failing cell never stops the
    grid. Each cell is claimed first (bench.claims), so runners sharing a results folder split
    the grid and a dead runner's cells are taken over. The first Ctrl-C abandons the cell in
    progress (no record, claim released) and returns interrupted; a second stops at once. A
    rerun continues with the missing cells. `run_cell`: bench.harness.run_cell unless given.
    `only`: run ids to restrict the grid to (a launcher's worker runs its own cells)."""
    from bench.console import progress_bar

    if run_cell is None:
        from bench.harness import run_cell
    if only is not None:
        plan_ = dataclasses.replace(plan_, cells=[c for c in plan_.cells if c.run_id in only])
    outcome = GridOutcome(records=[], ran=0, skipped=0)
    with (
        _Sigint() as sigint,
        progress_bar(console=console, show=progress, transient=False, info=True) as bar,
    ):
        grid = _Grid(plan_, req, run_cell, outcome, sigint, bar)
        try:
            todo = grid.unfinished()
            grid.task = bar.add_task(
                "grid", total=len(todo), info=f"{outcome.skipped} already done"
            )
            for cell in todo:
                grid.run(cell)
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome


@dataclass
class _Grid:
    """One pass over a grid: what `run_grid` needs while it claims and runs cells."""

    plan: Plan
    req: RunRequest
    run_cell: Callable[..., dict[str, Any]]
    outcome: GridOutcome
    sigint: _Sigint
    bar: Any  # rich Progress
    task: Any = None
    # record file identity when the pass began, per cell to run: a change since means another
    # runner ran the cell during this pass
    seen: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from bench import claims

        self.stale = claims.stale_after_s(self.req.stale_claim_s)

    def unfinished(self) -> list[CellConfig]:
        """The cells to run; finished ones go to the outcome as skipped."""
        from bench import claims
        from bench.records import remove_stale_temp

        results = self.req.results
        with self.sigint.critical():
            remove_stale_temp(results)
            claims.remove_stale_temp(results)
            claimed = claims.current_claims(results, stale_after=self.stale)
        todo = []
        for cell in self.plan.cells:
            # stamped before reading: a record another runner writes in between is then seen
            # as written during this pass, instead of being missed and the cell run twice
            stamp = _stamp(results, cell.run_id)
            done = _done(self.req, cell.run_id)
            if done is None:
                todo.append(cell)
                self.seen[cell.run_id] = stamp
                continue
            self.outcome.records.append(done)
            self.outcome.skipped += 1
            if cell.run_id in claimed and not claimed[cell.run_id].alive:
                with self.sigint.critical():
                    # its runner died after writing the record, before releasing the claim
                    claims.tidy(results, cell.run_id, stale_after=self.stale)
        return todo

    def written_meanwhile(self, run_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(whether another runner wrote this cell's record file during this pass, the record
        or None if the file is not one). Whatever its status, the cell had its attempt in this
        pass: a failed cell is not retried twice at once."""
        from bench.records import read_record, record_path

        if _stamp(self.req.results, run_id) == self.seen[run_id]:
            return False, None
        return True, read_record(record_path(self.req.results, run_id), run_id=run_id)

    def run(self, cell: CellConfig) -> None:
        """Claim, run, record and release one cell (or leave it to the runner holding it)."""
        from bench import claims
        from bench.records import save_record

        label = _where(cell.to_dict())
        claim = None
        try:
            with self.sigint.critical():
                claim = claims.try_claim(
                    self.req.results, cell.run_id, about=_about(cell), stale_after=self.stale
                )
                if claim is None:
                    self.outcome.busy += 1
                    self.bar.console.print(f"[yellow]running elsewhere[/] {label}")
                    self.bar.advance(self.task)
                    return
                changed, done = self.written_meanwhile(cell.run_id)
                if changed:
                    self.outcome.skipped += 1
                    if done is not None:
                        self.outcome.records.append(done)
                        self.bar.console.print(f"[dim]{done.get('status')} elsewhere[/] {label}")
                    else:
                        self.bar.console.print(
                            f"[yellow]skipped[/] {label}: a file that is not a record appeared "
                            "where its record goes (left untouched)"
                        )
                    self.bar.advance(self.task)
                    return
            record = self._train(cell, label)
            record.update(self.plan.annotations.get(cell.run_id, {}))
            with self.sigint.critical():
                save_record(self.req.results, record)
                self.outcome.records.append(record)
                self.outcome.ran += 1
                self.bar.advance(self.task)
                self.bar.console.print(_cell_line(record))
        finally:
            if claim is not None:
                with self.sigint.critical():
                    claim.release()

    def _train(self, cell: CellConfig, label: str) -> dict[str, Any]:
        bar = self.bar
        cell_task = bar.add_task(f"  {label}", total=None, info="")

        def on_step(step: int, total: int, loss: float, epoch: int) -> None:
            info = f"epoch {epoch + 1}/{cell.epochs} loss {loss:.4f}"
            bar.update(cell_task, completed=step, total=total, info=info)

        def on_preload(split: str, done: int, total: int) -> None:
            info = f"preloading {split} features"
            bar.update(cell_task, completed=done, total=total, info=info)

        try:
            return run_with_oom_retry(
                self.run_cell,
                cell,
                self.plan.datasets[data_key(cell)],
                self.plan.source,
                retry=self.req.oom_retry,
                on_step=on_step,
                on_preload=on_preload,
            )
        finally:
            bar.remove_task(cell_task)


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
    if record["status"] == "trial":
        trial = record["trial"]
        searched = (record.get("hyperparameters") or {}).get("searched") or {}
        hp = f"lr {cfg['lr']:.3g} wd {cfg['weight_decay']:g}" + "".join(
            f" {k} {v}" for k, v in searched.items() if k not in ("lr", "weight_decay")
        )
        if trial["outcome"] != "ok" or trial.get("val_primary") is None:
            return f"[yellow]trial[/] {where} ({hp}): {trial['outcome']} ({secs:.1f} s)"
        return (
            f"[cyan]trial[/] {where} ({hp}): val {trial['metric']} {trial['val_primary']:.4f} "
            f"({secs:.1f} s)"
        )
    return f"[red]{record['status']}[/] {where}: {record['error']}"
