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
from methods.registry import OPTIMIZERS


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
    """Canonical method names; 'all' means every registered method, 'core' the six core methods (CORE_METHODS)."""
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


# Training settings of a cell beside TRAIN_KEYS: the request's (--warmup-epochs, --grad-clip)
# unless a protocol or --set gives a method its own.
LOOP_KEYS: tuple[str, ...] = (
    "warmup_epochs",
    "grad_clip",
    "dropout",
    "head_init",
    "lr_step",
    "decay",
)


def method_settings(method: str, req: GridRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, builder hyperparameters) for a method: its defaults, then what the
    request's protocol pins for it, then --lr, then --set."""
    spec = get_method(method)
    # A method that declares its lr for a reference batch (VPT: base x batch/256) gets it scaled
    # to this batch size; a protocol, --lr and --set give the rate used as it is.
    defaults = {
        **spec.train_defaults,
        "warmup_epochs": req.warmup_epochs,
        "grad_clip": req.grad_clip,
        "dropout": None,
        "head_init": "timm",
        "lr_step": "iteration",
        "decay": "matrices",
    }
    train = {**defaults, "lr": spec.default_lr(req.batch_size), **req.method_train.get(method, {})}
    if req.lr is not None:
        train["lr"] = req.lr
    pinned = req.method_hparams.get(method, {})
    unknown = sorted(set(pinned) - set(spec.hparams))
    if unknown:
        raise UserError(
            f"the protocol pins {method} hyperparameter(s) {unknown} it does not have; valid: "
            f"{', '.join(spec.hparams)}"
        )
    hparams = {**spec.hparams, **pinned}
    for key, raw in req.sets.get(method, {}).items():
        if key in defaults:
            train[key] = coerce(raw, defaults[key], what=f"{method}.{key}")
        elif key in spec.hparams:
            hparams[key] = coerce(raw, spec.hparams[key], what=f"{method}.{key}")
        else:
            valid = ", ".join(sorted({*spec.all_defaults, *LOOP_KEYS}))
            raise UserError(
                f"--set {method}.{key}: {method!r} has no hyperparameter {key!r}; valid: {valid}"
            )
    _check_train(method, train)
    return train, hparams


def _check_train(method: str, train: dict[str, Any]) -> None:
    from bench.model_init import HEAD_INITS
    from bench.train import DECAY_RULES, LR_STEPS

    if train["optimizer"] not in OPTIMIZERS:
        raise UserError(
            f"{method}.optimizer={train['optimizer']!r}: expected one of {', '.join(OPTIMIZERS)}"
        )
    if not train["lr"] > 0:
        raise UserError(f"{method}: learning rate must be > 0, got {train['lr']}")
    if train["weight_decay"] < 0:
        raise UserError(f"{method}: weight_decay must be >= 0, got {train['weight_decay']}")
    for key in ("warmup_epochs", "grad_clip"):
        if not (isinstance(train[key], (int, float)) and 0 <= train[key] < math.inf):
            raise UserError(f"{method}.{key} must be >= 0 and finite, got {train[key]!r}")
    dropout = train["dropout"]
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"{method}.dropout must be in [0, 1) or none, got {dropout!r}")
    for key, valid in (("head_init", HEAD_INITS), ("lr_step", LR_STEPS), ("decay", DECAY_RULES)):
        if train[key] not in valid:
            raise UserError(f"{method}.{key}={train[key]!r}: expected one of {', '.join(valid)}")
