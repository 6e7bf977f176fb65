"""The grid options checked before torch, timm and peft are imported, so a typo fails in a second
rather than after the heavy imports: method names and `--set` against the method manifest
(bench.method_manifest), datasets against the catalog, the numbers, the augmentation and a
--protocol's grid. The same rules and messages as `GridRequest.checked()`, which still runs
later and stays the truth: the rules shared with it (`check_numbers`, `settings_for`) live
here, once. With a manifest written from other method files (a user's own method added), or
with the registry already imported, the method and `--set` checks wait for the registry, so a
valid new method is never refused."""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backbone_config import hub_config_missing, hub_repo, weights_missing
from bench.backbone_geometry import cell_geometry, named_geometry
from bench.backbone_options import check_backbone_options, weights_source
from bench.catalog import data_root, get_card
from bench.config import LATE_DEFAULTS, coerce
from bench.errors import UserError
from bench.hparam_limits import Limit, check_values, limits_from_json
from bench.method_manifest import load_manifest, unavailable
from bench.option_values import (
    AUGMENT_NAMES,
    DECAY_RULES,
    HEAD_INITS,
    LOOP_KEYS,
    LR_STEPS,
    OPTIMIZERS,
    SELECT_RULES,
    TRAIN_AXES,
    TRAIN_KEYS,
)
from bench.space_options import canonical_spaces, declared_space, no_space, searched_values
from bench.tuning_request import TuneRequest


class Settings(typing.Protocol):
    """What `settings_for` reads of a request (a GridRequest or an EarlyRequest)."""

    backbone: str
    img_size: int | None
    lr: float | None
    warmup_epochs: float
    grad_clip: float
    select: str
    sets: dict[str, dict[str, str]]
    method_train: dict[str, dict[str, Any]]
    method_hparams: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class EarlyRequest:
    """The grid options as the command line parsed them, before the registry is imported: the
    GridRequest fields the early checks read (bench.protocols.apply_protocol fills them too)."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    backbone: str = "demo-vit"
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    img_size: int | None = None
    sets: dict[str, dict[str, str]] = field(default_factory=dict)
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    select: str = "best"
    shots: list[int] | None = None
    split_seeds: list[int] | None = None
    augment: str = "rrc-flip"
    precision: str = "auto"
    dataset_lr: dict[tuple[str, str], float] = field(default_factory=dict)
    method_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: str | None = None
    pretrained: bool = True
    data_root: str | Path | None = None
    tune: TuneRequest | None = None

    def replace(self, **changes: Any) -> EarlyRequest:
        return dataclasses.replace(self, **changes)


def precheck(req: EarlyRequest, protocol: Any = None, *, data: bool = False) -> None:
    """Raise the UserError planning the grid would raise for these options (a --protocol's grid
    applied first), where it can be told without the registry; None when nothing is wrong that
    can be told yet. `data`: the datasets' files must be here (a real run on this machine)."""
    if protocol is not None:
        from bench.protocols import apply_protocol

        req = apply_protocol(protocol, req)
    methods = early_methods()
    if methods is not None:
        names = methods.resolve(req.methods)
        req = req.replace(methods=names, sets=methods.canonical_sets(req.sets, names))
    if not req.datasets:
        raise UserError("no datasets selected; see `bench list`")
    cards = [get_card(name) for name in req.datasets]  # an unknown name lists the catalog
    check_numbers(req)
    if req.augment not in AUGMENT_NAMES:  # bench.transforms.get_augmentation's message
        raise UserError(
            f"unknown augmentation {req.augment!r}; choose one of: {', '.join(AUGMENT_NAMES)}"
        )
    if methods is not None:
        check_methods(req, methods)
    # then, as in planning: the data on this machine, the backbone
    if data:
        from bench.formats import get_format

        root = data_root(req.data_root)
        for card in cards:
            get_format(card.format).check_available(card, root)
        if req.shots:
            check_shots(cards, root, req.shots, req.split_seeds or [0])
        repo = hub_repo(req.backbone)  # a hub backbone's config must be here or reachable
        if repo is not None and (missing := hub_config_missing(req.backbone, repo)):
            raise missing
    check_backbone_options(req.backbone, pretrained=req.pretrained, weights=req.weights)
    if data and req.pretrained and req.weights is None:  # a timm ViT's weights, offline
        source = weights_source(req.backbone)
        if source is not None and (missing := weights_missing(req.backbone, source, req.backbone)):
            raise missing


def check_shots(cards: list[Any], root: Path, shots: list[int], split_seeds: list[int]) -> None:
    """Draw every few-shot sample from the training labels a format reads without its images
    (bench.formats.Format.split_labels), so too many shots fail before torch with the sampler's
    own message. Only where the real pool is that array: the format gives a validation split
    (none carved from train) and no patient groups."""
    from bench.formats import get_format
    from bench.splits import sample_shots

    for card in cards:
        labels = get_format(card.format).split_labels(card, root)
        if not labels or "val" not in labels:
            continue
        for k in shots:
            for seed in split_seeds:
                sample_shots(labels["train"], k, seed, task=card.task, classes=card.classes)


def precheck_methods(names: list[str], sets: dict[str, dict[str, str]], backbone: str) -> None:
    """`bench profile`'s methods, --set and --backbone, checked as `precheck` checks a grid's."""
    check_backbone_options(backbone, pretrained=False, weights=None)
    methods = early_methods()
    if methods is not None:
        names = methods.resolve(names)
        sets = methods.canonical_sets(sets, names)
        check_methods(EarlyRequest(methods=names, datasets=[], seeds=[0], backbone=backbone,
                                   sets=sets), methods)  # fmt: skip


def check_methods(req: EarlyRequest, methods: Methods) -> None:
    """Each method's settings (defaults, protocol, --lr, --set) and --space (canonical names)."""
    optimizers = {}
    for name in req.methods:
        entry = methods.entry(name)
        train, _ = settings_for(
            name,
            train_defaults={k: entry[k] for k in TRAIN_KEYS},
            default_lr=methods.default_lr(entry, req.batch_size),
            hparams=entry["hparams"],
            limits=methods.limits(entry),
            own_input_size=entry["own_input_size"],
            req=req,
        )
        optimizers[name] = train["optimizer"]
    if req.tune is not None:
        spaces = canonical_spaces(req.tune.spaces, req.methods, lambda n: methods.entry(n)["name"])
        for name, optimizer in optimizers.items():
            check_space(name, methods, optimizer, spaces.get(name, {}), req)


def check_space(
    name: str, methods: Methods, optimizer: str, overrides: dict[str, str], req: EarlyRequest
) -> None:
    """A method's --space against its manifest entry, by bench.tuning_plan's rules."""
    entry = methods.entry(name)
    pins = [k for k in TRAIN_AXES if k in req.method_train.get(name, {})]
    if declared_space(optimizer, entry["search"], pins) is None and "lr" not in overrides:
        raise no_space(name, optimizer, entry["search"])
    defaults = {k: entry[k] for k in TRAIN_AXES} | entry["hparams"]
    sets = req.sets.get(name, {})
    searched_values(
        name,
        overrides,
        defaults=defaults,
        limits=methods.limits(entry),
        sets=sets,
        lr_pinned=req.lr is not None,
    )


def early_methods() -> Methods | None:
    """The manifest's methods; None when it is stale, or when this process already holds the
    registry (a notebook, a test that registers a method): the registry may then have methods
    no file declares, and the full check, cheap by now, is the one to trust."""
    if "methods.registry" in sys.modules:
        return None
    manifest = load_manifest()
    return Methods(manifest["methods"]) if manifest is not None else None


def expand_method_names(
    names: list[str], *, every: list[str], core: list[str], canonical: Callable[[str], str]
) -> list[str]:
    """Canonical method names in order, without repeats: 'all' is `every`, 'core' is `core`,
    any other name `canonical(name)` (whose KeyError says what is wrong with it)."""
    out: list[str] = []
    for name in names:
        if name in ("all", "core"):
            expanded = every if name == "all" else core
        else:
            try:
                expanded = [canonical(name)]
            except KeyError as exc:
                raise UserError(exc.args[0]) from None
        out += [m for m in expanded if m not in out]
    if not out:
        raise UserError("no methods selected; see `bench list`")
    return out


class Methods:
    """The manifest's methods, looked up as `methods.get_method` looks up the registry's."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = {e["name"]: e for e in entries}
        self.aliases = {a: e["name"] for e in entries for a in e["aliases"]}
        # in the registry's order (core first), as `list_methods()` gives them
        self.available = [e["name"] for e in entries if not unavailable(e)]

    def entry(self, name: str) -> dict[str, Any]:
        """A method's entry by name or alias; a KeyError with the registry's message otherwise."""
        key = self.aliases.get(name, name)
        if key not in self.entries:
            raise KeyError(f"unknown method {name!r}; available: {', '.join(self.available)}")
        reason = unavailable(self.entries[key])
        if reason:
            raise KeyError(reason)
        return self.entries[key]

    def resolve(self, names: list[str]) -> list[str]:
        """bench.grid.resolve_methods: canonical names, 'all' and 'core' expanded."""
        core = [m for m in self.available if self.entries[m]["core"]]
        return expand_method_names(
            names, every=self.available, core=core, canonical=lambda n: self.entry(n)["name"]
        )

    def canonical_sets(
        self, sets: dict[str, dict[str, str]], methods: list[str]
    ) -> dict[str, dict[str, str]]:
        """bench.grid.request's --set values keyed by canonical method name."""
        canonical: dict[str, dict[str, str]] = {}
        for method, values in sets.items():
            try:
                name = self.entry(method)["name"]
            except KeyError as exc:
                raise UserError(f"--set {method}.…: {exc.args[0]}") from None
            if name not in methods:
                raise UserError(
                    f"--set {method}.…: method {method!r} is not in --methods "
                    f"({', '.join(methods)})"
                )
            canonical.setdefault(name, {}).update(values)
        return canonical

    @staticmethod
    def limits(entry: dict[str, Any]) -> dict[str, Limit]:
        """The values each of the method's hyperparameters may take."""
        return limits_from_json(entry["limits"])

    @staticmethod
    def default_lr(entry: dict[str, Any], batch_size: int) -> float:
        """methods.search.LrRule.scale: a base rate for a reference batch, scaled linearly."""
        reference = entry.get("lr_reference_batch")
        return entry["lr"] * batch_size / reference if reference else entry["lr"]


def check_img_size(img_size: int | None, backbone: str) -> None:
    """--img-size holds one patch of the backbone at least (8 px where its patch is not known
    before it is built)."""
    patch = (named_geometry(backbone) or {}).get("patch", 0)
    least = max(8, patch)
    if img_size is not None and img_size < least:
        which = " (the backbone's patch size)" if patch == least else ""
        raise UserError(f"--img-size must be >= {least}{which}, got {img_size}")


def check_numbers(req: Any) -> None:
    """The request's numbers (GridRequest or EarlyRequest); a UserError names the bad option."""
    if not req.seeds or min(req.seeds) < 0:
        raise UserError("--seeds: give one or more integers >= 0, e.g. --seeds 0,1,2")
    if req.epochs is not None and req.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {req.epochs}")
    if req.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {req.batch_size}")
    if req.lr is not None and not 0 < req.lr < math.inf:
        raise UserError(f"--lr must be > 0 and finite, got {req.lr}")
    check_img_size(req.img_size, req.backbone)
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


def settings_for(
    method: str,
    *,
    train_defaults: Mapping[str, Any],
    default_lr: float,
    hparams: Mapping[str, Any],
    limits: Mapping[str, Limit],
    own_input_size: bool,
    req: Settings,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, builder hyperparameters) for a method with these defaults: its
    defaults, then what the request's protocol pins for it, then --lr, then --set; each
    hyperparameter within its `limits` (on the backbone's shape where it is known;
    `own_input_size`: the method picks the size the backbone is built at)."""
    defaults = {
        **train_defaults,
        # the other harness settings start at the cell's defaults, which keep old run ids
        **{k: LATE_DEFAULTS[k] for k in LOOP_KEYS if k in LATE_DEFAULTS},
        "warmup_epochs": req.warmup_epochs,
        "grad_clip": req.grad_clip,
        "select": req.select,
    }
    train = {**defaults, "lr": default_lr, **req.method_train.get(method, {})}
    if req.lr is not None:
        train["lr"] = req.lr
    pinned = req.method_hparams.get(method, {})
    unknown = sorted(set(pinned) - set(hparams))
    if unknown:
        raise UserError(
            f"the protocol pins {method} hyperparameter(s) {unknown} it does not have; valid: "
            f"{', '.join(hparams)}"
        )
    out = {**hparams, **pinned}
    for key, raw in req.sets.get(method, {}).items():
        if key in defaults:
            train[key] = coerce(raw, defaults[key], what=f"{method}.{key}")
        elif key in hparams:
            out[key] = coerce(raw, hparams[key], what=f"{method}.{key}")
        else:
            valid = ", ".join(sorted({*train_defaults, *hparams, *LOOP_KEYS}))
            raise UserError(
                f"--set {method}.{key}: {method!r} has no hyperparameter {key!r}; valid: {valid}"
            )
    check_train(method, train)
    geometry = cell_geometry(req.backbone, own_input_size=own_input_size, img_size=req.img_size)
    check_values(method, limits, out, geometry)
    return train, out


def check_train(method: str, train: dict[str, Any]) -> None:
    """A method's training settings: optimizer, rate, decay and the loop's settings."""
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
    dropout = train["backbone_dropout"]
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"{method}.backbone_dropout must be in [0, 1) or none, got {dropout!r}")
    for key, valid in (
        ("head_init", HEAD_INITS), ("lr_step", LR_STEPS), ("decay", DECAY_RULES),
        ("select", SELECT_RULES),
    ):  # fmt: skip
        if train[key] not in valid:
            raise UserError(f"{method}.{key}={train[key]!r}: expected one of {', '.join(valid)}")
