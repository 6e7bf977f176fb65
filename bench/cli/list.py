"""`bench list`: the registered methods (with defaults and trainable counts), their search
spaces, the dataset catalog, augmentations, paper protocols and suggested backbones."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.cli.common import fail
from bench.console import console, wrapping_table

KINDS = ("all", "methods", "spaces", "datasets", "augmentations", "protocols", "backbones")


def list_(
    what: Annotated[
        str, typer.Argument(help="methods, datasets, augmentations, protocols, backbones or all.")
    ] = "all",
    backbone: Annotated[
        str, typer.Option(help="Backbone on which to count trainable parameters.")
    ] = "demo-vit",
    num_classes: Annotated[int, typer.Option(help="Head size for the trainable counts.")] = 7,
) -> None:
    """Show the registered methods (with defaults and trainable counts), the dataset catalog and
    suggested backbones."""
    if what not in KINDS:
        fail(f"`bench list {what}`: expected one of {', '.join(KINDS)}")
    from bench.errors import UserError

    try:
        out = console()
        if what in ("all", "methods"):
            _methods(out, backbone, num_classes)
        if what in ("all", "spaces"):
            _spaces(out)
        if what in ("all", "datasets"):
            _datasets(out)
        if what in ("all", "augmentations"):
            _augmentations(out)
        if what in ("all", "protocols"):
            _protocols(out)
        if what in ("all", "backbones"):
            from bench.backbones import SUGGESTED_BACKBONES

            out.print(
                "backbones: any timm ViT name (`timm.list_models('vit_*')`), e.g. "
                + ", ".join(SUGGESTED_BACKBONES)
            )
    except UserError as exc:  # a bad card in $MEDPEFT_CARDS, an unknown backbone
        fail(str(exc))


def _methods(out, backbone: str, num_classes: int) -> None:
    from bench.harness import trainable_counts
    from methods import CORE_METHODS, get_method, list_methods

    counts = trainable_counts(list_methods(), backbone=backbone, num_classes=num_classes)
    table = wrapping_table(
        "methods",
        ("name", "core", "optimizer", "lr", "wd", "trainable"),
        ("hyperparameters", "what it does", "paper"),
    )
    table.caption = f"trainable: with the defaults on {backbone}, {num_classes} classes"
    for name in list_methods(include_unavailable=True):
        spec = get_method(name, include_unavailable=True)
        hp = ", ".join(f"{k}={v}" for k, v in spec.hparams.items()) or "-"
        core = "yes" if name in CORE_METHODS or set(spec.aliases) & set(CORE_METHODS) else ""
        row = (
            name,
            core,
            spec.optimizer,
            f"{spec.lr:g}" + (f" x b/{spec.lr_rule.reference_batch}" if spec.lr_rule else ""),
            f"{spec.weight_decay:g}",
            "unavailable" if spec.unavailable else counts[name],
        )
        # an unavailable method is listed, saying what it needs, so `bench run` is not a surprise
        summary = (
            f"UNAVAILABLE: {spec.unavailable}. {spec.summary}" if spec.unavailable else spec.summary
        )
        table.add_row(*row, hp, summary, spec.paper)
    out.print(table)


def _spaces(out) -> None:
    """What `bench tune` searches for each method."""
    from methods import get_method, list_methods

    table = wrapping_table(
        "search spaces (bench tune; --space METHOD.KEY=a,b replaces a grid, --set pins a key)",
        ("method", "optimizer", "size"),
        ("lr (base)", "weight decay", "own knobs", "source"),
    )
    for name in list_methods():
        spec = get_method(name)
        for optimizer, space in spec.search.items():
            rule = f" x batch/{space.lr_rule.reference_batch}" if space.lr_rule else ""
            knobs = "; ".join(f"{k} {list(v)}" for k, v in space.hparams.items()) or "-"
            table.add_row(
                name,
                optimizer + (" (default)" if optimizer == spec.optimizer else ""),
                str(space.size),
                ", ".join(f"{v:g}" for v in space.lr) + rule,
                ", ".join(f"{v:g}" for v in space.weight_decay),
                knobs,
                space.source,
            )
    out.print(table)


def _datasets(out) -> None:
    from bench.catalog import load_catalog

    table = wrapping_table(
        "datasets (`bench data info NAME`)",
        ("name", "task", "classes", "metric", "format", "epochs"),
        ("what it is",),
    )
    for card in load_catalog().values():
        table.add_row(
            card.name,
            card.task,
            str(len(card.classes)),
            card.primary_metric,
            card.format,
            str(card.epochs),
            card.title,
        )
    out.print(table)


def _augmentations(out) -> None:
    from bench.transforms import AUGMENTATIONS, DEFAULT_AUGMENT

    table = wrapping_table("augmentations (--augment)", ("name",), ("what it does",))
    for name, aug in AUGMENTATIONS.items():
        table.add_row(name + (" (default)" if name == DEFAULT_AUGMENT else ""), aug.summary)
    out.print(table)


def _protocols(out) -> None:
    from bench.protocols import get_protocol, list_protocols

    table = wrapping_table("protocols (--protocol, report --paper)", ("name",), ("what it runs",))
    for name in list_protocols():
        p = get_protocol(name)
        shots = (
            f", {'/'.join(map(str, p.shots))}-shot x {len(p.split_seeds or ())}" if p.shots else ""
        )
        table.add_row(
            name, f"{p.title}: {len(p.methods)} methods x {len(p.datasets)} datasets{shots}"
        )
    out.print(table)
