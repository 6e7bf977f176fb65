"""What the user asked for, checked: a frozen `GridRequest` and the rules that resolve its names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.catalog import get_card
from bench.config import coerce
from bench.errors import UserError

# Re-exported beside DEVICES and resolve_device: the precision rules live in bench.precision.
from bench.option_values import DEVICES
from bench.precision import resolve_precision as resolve_precision
from bench.transforms import get_augmentation
from methods import CORE_METHODS, get_method, list_methods
from methods.registry import OPTIMIZERS, TRAIN_KEYS


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
    force: bool = False
    shots: list[int] | None = None  # None: full data
    split_seeds: list[int] | None = None  # few-shot samples; default [0]
    augment: str = "rrc-flip"
    precision: str = "auto"  # auto: by the device's capability (bench.precision)
    compile: bool = False
    # (dataset, method) -> learning rate: a paper's per-dataset rates (FPT+), from --protocol
    dataset_lr: dict[tuple[str, str], float] = field(default_factory=dict)
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
        req._check_numbers()
        get_augmentation(req.augment)  # an unknown name fails here, listing the valid ones
        for method in methods:
            method_settings(method, req)
        return req

    def _check_numbers(self) -> None:
        if not self.seeds or min(self.seeds) < 0:
            raise UserError("--seeds: give one or more integers >= 0, e.g. --seeds 0,1,2")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be > 0 and finite, got {self.lr}")
        if self.img_size is not None and self.img_size < 8:
            raise UserError(f"--img-size must be >= 8, got {self.img_size}")
        # NaN fails every comparison, so `x < 0` would let it through; `not 0 <= x` does not
        if not (0 <= self.warmup_epochs < math.inf and 0 <= self.grad_clip < math.inf):
            raise UserError(
                "--warmup-epochs and --grad-clip must be >= 0 and finite, got "
                f"{self.warmup_epochs} and {self.grad_clip}"
            )
        if self.shots is not None and (not self.shots or min(self.shots) < 1):
            raise UserError("--shots: give one or more integers >= 1, e.g. --shots 1,5,10")
        if self.split_seeds is not None:
            if self.shots is None:
                raise UserError("--split-seeds chooses few-shot samples; it needs --shots")
            if not self.split_seeds or min(self.split_seeds) < 0:
                raise UserError("--split-seeds: give one or more integers >= 0, e.g. 0-4")


def resolve_methods(names: list[str]) -> list[str]:
    """Canonical method names; 'all' means every registered method, 'core' the card's six."""
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
        raise UserError(f"--device {device!r}: expected auto, cpu, cuda or mps")
    mps = torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device is visible to torch; use --device cpu or auto"
        )
    if device == "mps" and not mps:
        raise UserError(
            "--device mps: torch has no MPS device here (Apple silicon, macOS 12.3+); use "
            "--device cpu or auto"
        )
    return device


def method_settings(method: str, req: GridRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, builder hyperparameters) for a method after --lr and --set."""
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
