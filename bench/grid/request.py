"""What the user asked for, checked: a frozen `GridRequest` and the rules that resolve its names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.catalog import get_card
from bench.device_options import no_cuda, no_mps, unknown_device
from bench.errors import UserError

# Re-exported beside DEVICES and resolve_device: the precision rules live in bench.precision.
from bench.option_values import DEVICES
from bench.precheck import check_numbers, expand_method_names, settings_for
from bench.precision import resolve_precision as resolve_precision
from bench.transforms import get_augmentation
from methods import CORE_METHODS, get_method, list_methods


@dataclass(frozen=True)
class GridRequest:
    """What the user asked for on the command line (or a protocol filled in), before the data and
    the backbone are resolved. `checked()` validates it and returns the canonical request."""

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
    select: str = "best"  # which epoch's weights each cell tests (bench.selection)
    force: bool = False
    shots: list[int] | None = None  # None: full data
    split_seeds: list[int] | None = None  # few-shot samples; default [0]
    augment: str = "rrc-flip"
    precision: str = "auto"  # auto: by the device's capability (bench.precision)
    compile: bool = False
    # (dataset, method) -> learning rate: a paper's per-dataset rates (FPT+), from --protocol
    dataset_lr: dict[tuple[str, str], float] = field(default_factory=dict)
    # method -> training settings and hyperparameters a --protocol pins (the paper's recipe);
    # --lr and --set still override them
    method_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    oom_retry: bool = False  # retry an oom cell at half the batch size, down to 1
    stale_claim_s: float | None = None  # None: $MEDPEFT_STALE_CLAIM_HOURS, else 24 h
    protocol: str | None = None  # the --protocol that filled this request, if any
    tune: Any = None  # bench.tuning.TuneRequest: search each method's space first (bench tune)
    # save each final's trained tensors beside its record (bench.artefacts); how records are
    # written, not part of any cell's identity
    artefacts: bool = True
    # --tracker: bench.trackers names that follow each cell live; not part of any cell's identity
    trackers: tuple[str, ...] = ()
    tracker_dir: Path | None = None  # --tracker-dir: trackers' local files; None: the results

    def replace(self, **changes: Any) -> GridRequest:
        return dataclasses.replace(self, **changes)

    @property
    def shot_grid(self) -> list[tuple[int | None, int]]:
        """(shots, split seed) pairs; [(None, 0)] for full data."""
        if not self.shots:
            return [(None, 0)]
        return [(k, s) for k in self.shots for s in (self.split_seeds or [0])]

    def checked(self) -> GridRequest:
        """Every option checked (UserError names the bad one), methods resolved and `--set`
        addressed to canonical method names. Reads the catalog, not the data or any model."""
        methods = resolve_methods(self.methods)
        req = self.replace(methods=methods, sets=_canonical_sets(self.sets, methods))
        if not req.datasets:
            raise UserError("no datasets selected; see `bench list`")
        for name in req.datasets:
            get_card(name)  # an unknown name fails here, listing the catalog
        check_numbers(req)
        get_augmentation(req.augment)  # an unknown name fails here, listing the valid ones
        for method in methods:
            method_settings(method, req)
        return req


def resolve_methods(names: list[str]) -> list[str]:
    """Canonical method names; 'all' means every registered method, 'core' the six core methods
    (CORE_METHODS), by their canonical names (fpt -> fpt-plus), so records and run ids do not
    depend on spelling."""
    core = [get_method(m).name for m in CORE_METHODS if _known(m)]
    return expand_method_names(
        names, every=list_methods(), core=core, canonical=lambda n: get_method(n).name
    )


def _known(name: str) -> bool:
    try:
        get_method(name)
        return True
    except KeyError:
        return False


def _canonical_sets(
    sets: dict[str, dict[str, str]], methods: list[str]
) -> dict[str, dict[str, str]]:
    """--set values keyed by canonical method name; an alias (--set fpt.lr=…) sets the method it
    names (fpt-plus)."""
    canonical: dict[str, dict[str, str]] = {}
    for method, values in sets.items():
        try:  # 'all' and 'core' are --methods shorthands, not methods a --set can address
            name = get_method(method).name
        except KeyError as exc:
            raise UserError(f"--set {method}.…: {exc.args[0]}") from None
        if name not in methods:
            raise UserError(
                f"--set {method}.…: method {method!r} is not in --methods ({', '.join(methods)})"
            )
        canonical.setdefault(name, {}).update(values)
    return canonical


def resolve_device(device: str) -> str:
    """auto: cuda when torch sees a GPU, else mps (Apple silicon) when available, else cpu; cuda
    or mps without one is refused."""
    if device not in DEVICES:
        raise unknown_device(device)
    mps = torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise no_cuda()
    if device == "mps" and not mps:
        raise no_mps()
    return device


def method_settings(method: str, req: GridRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, builder hyperparameters) for a method: its defaults, then what the
    request's protocol pins for it, then --lr, then --set (the rules: bench.precheck)."""
    spec = get_method(method)
    # A method that declares its lr for a reference batch (VPT: base x batch/256) gets it scaled
    # to this batch size; a protocol, --lr and --set give the rate used as it is.
    return settings_for(
        method,
        train_defaults=spec.train_defaults,
        default_lr=spec.default_lr(req.batch_size),
        hparams=spec.hparams,
        limits=spec.limits,
        own_input_size=spec.input_size is not None,
        req=req,
    )
