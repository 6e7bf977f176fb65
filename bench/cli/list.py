"""`bench list`: the registered methods (with defaults and trainable counts), their search
spaces, the dataset catalog, augmentations, paper protocols and suggested backbones, as tables
or (--json) one JSON document. Each kind is gathered once as rows of plain values that both
forms print."""

from __future__ import annotations

from typing import Annotated, Any

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
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON document on stdout with a key per kind listed: methods (each name, "
            "aliases, core, available, unavailable, optimizer, lr, lr_reference_batch, "
            "weight_decay, trainable, hparams, summary, paper), spaces (each method, optimizer, "
            "default, size, lr, lr_reference_batch, weight_decay, hparams, source), datasets "
            "(each name, task, classes, metric, format, epochs, title), augmentations (each "
            "name, default, summary), protocols (each name, title, methods, datasets, shots, "
            "split_seeds, seeds), backbones (suggested names).",
        ),
    ] = False,
) -> None:
    """Show the registered methods (with defaults and trainable counts), the dataset catalog and
    suggested backbones."""
    if what not in KINDS:
        fail(f"`bench list {what}`: expected one of {', '.join(KINDS)}")
    from bench.backbone_options import check_backbone_name
    from bench.errors import UserError

    if what in ("all", "methods"):  # before the counts import torch
        if num_classes < 1:
            fail(f"--num-classes must be >= 1, got {num_classes}")
        try:
            check_backbone_name(backbone)
        except UserError as exc:
            fail(str(exc))

    gather = {"methods": lambda: _method_rows(backbone, num_classes), "spaces": _space_rows,
              "datasets": _dataset_rows, "augmentations": _augmentation_rows,
              "protocols": _protocol_rows, "backbones": _backbones}  # fmt: skip
    try:
        rows = {kind: get() for kind, get in gather.items() if what in ("all", kind)}
    except UserError as exc:  # a bad card in $MEDPEFT_CARDS, an unknown backbone
        fail(str(exc))
    if json_:
        from bench.cli.json_out import emit

        emit(rows)
        return
    out = console()
    if "methods" in rows:
        _methods(out, rows["methods"], backbone, num_classes)
    if "spaces" in rows:
        _spaces(out, rows["spaces"])
    if "datasets" in rows:
        _datasets(out, rows["datasets"])
    if "augmentations" in rows:
        _augmentations(out, rows["augmentations"])
    if "protocols" in rows:
        _protocols(out, rows["protocols"])
    if "backbones" in rows:
        out.print(
            "backbones: any timm ViT name (`timm.list_models('vit_*')`), e.g. "
            + ", ".join(rows["backbones"])
        )


def _method_rows(backbone: str, num_classes: int) -> list[dict[str, Any]]:
    """A row per registered method; at the default backbone and head size, read from the
    torch-free manifest while it matches the method files, else from the registry (which imports
    torch, timm and peft and builds every method once to count it)."""
    from bench.method_manifest import COUNT_BACKBONE, COUNT_CLASSES, load_manifest

    manifest = (
        load_manifest() if (backbone, num_classes) == (COUNT_BACKBONE, COUNT_CLASSES) else None
    )
    if manifest is not None:
        return manifest_rows(manifest)
    return registry_rows(backbone, num_classes)


def manifest_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The method rows from the manifest; availability is this install's peft's, as the
    registry would say it."""
    from bench.method_manifest import unavailable

    rows = []
    for m in manifest["methods"]:
        why = unavailable(m)
        rows.append({
            "name": m["name"], "aliases": list(m["aliases"]), "core": m["core"],
            "available": not why, "unavailable": why or None, "optimizer": m["optimizer"],
            "lr": m["lr"], "lr_reference_batch": m["lr_reference_batch"],
            "weight_decay": m["weight_decay"], "trainable": None if why else m["trainable"],
            "hparams": dict(m["hparams"]), "summary": m["summary"], "paper": m["paper"],
        })  # fmt: skip
    return rows


def registry_rows(backbone: str, num_classes: int) -> list[dict[str, Any]]:
    """The method rows from the registry, counted on `backbone` with a `num_classes` head."""
    from bench.method_counts import trainable_counts
    from methods import CORE_METHODS, get_method, list_methods

    counts = trainable_counts(list_methods(), backbone=backbone, num_classes=num_classes)
    rows = []
    for name in list_methods(include_unavailable=True):
        spec = get_method(name, include_unavailable=True)
        rows.append({
            "name": name,
            "aliases": list(spec.aliases),
            "core": name in CORE_METHODS or bool(set(spec.aliases) & set(CORE_METHODS)),
            "available": not spec.unavailable,
            "unavailable": spec.unavailable or None,  # what it needs, when it is
            "optimizer": spec.optimizer,
            "lr": spec.lr,
            "lr_reference_batch": spec.lr_rule.reference_batch if spec.lr_rule else None,
            "weight_decay": spec.weight_decay,
            "trainable": None if spec.unavailable else counts[name],
            "hparams": dict(spec.hparams),
            "summary": spec.summary,
            "paper": spec.paper,
        })  # fmt: skip
    return rows


def _methods(out, rows: list[dict[str, Any]], backbone: str, num_classes: int) -> None:
    table = wrapping_table(
        "methods",
        ("name", "core", "optimizer", "lr", "wd"),
        ("trainable", "hyperparameters", "what it does"),
    )
    table.caption = f"trainable: with the defaults on {backbone}, {num_classes} classes"
    for m in rows:
        rule = m["lr_reference_batch"]
        # an unavailable method is listed, saying what it needs, so `bench run` is not a surprise
        summary = (
            f"UNAVAILABLE: {m['unavailable']}. {m['summary']}" if m["unavailable"] else m["summary"]
        )
        table.add_row(
            m["name"] + "".join(f" ({a})" for a in m["aliases"]),
            "yes" if m["core"] else "",
            m["optimizer"],
            f"{m['lr']:g}" + (f" x b/{rule}" if rule else ""),
            f"{m['weight_decay']:g}",
            m["trainable"] or "unavailable",
            ", ".join(f"{k}={v}" for k, v in m["hparams"].items()) or "-",
            summary,
        )
    out.print(table)
    # The papers go below the table, a line each: a table cell folds or cuts a URL at any width
    # that leaves room for the rest, and a URL is only useful whole.
    cited: dict[str, list[str]] = {}
    for m in rows:
        cited.setdefault(m["paper"], []).append(m["name"])
    out.print("papers:")
    for url, names in cited.items():
        out.print(f"  {', '.join(names)}: {url}", soft_wrap=True)


def _space_rows() -> list[dict[str, Any]]:
    """What `bench tune` searches for each method."""
    from methods import get_method, list_methods

    rows = []
    for name in list_methods():
        spec = get_method(name)
        for optimizer, space in spec.search.items():
            rows.append({
                "method": name,
                "optimizer": optimizer,
                "default": optimizer == spec.optimizer,
                "size": space.size,
                "lr": list(space.lr),
                "lr_reference_batch": space.lr_rule.reference_batch if space.lr_rule else None,
                "weight_decay": list(space.weight_decay),
                "hparams": {k: list(v) for k, v in space.hparams.items()},
                "source": space.source,
            })  # fmt: skip
    return rows


def _spaces(out, rows: list[dict[str, Any]]) -> None:
    table = wrapping_table(
        "search spaces (bench tune; --space METHOD.KEY=a,b replaces a grid, --set pins a key)",
        ("method", "optimizer", "size"),
        ("lr (base)", "weight decay", "own knobs", "source"),
    )
    for s in rows:
        rule = f" x batch/{s['lr_reference_batch']}" if s["lr_reference_batch"] else ""
        table.add_row(
            s["method"],
            s["optimizer"] + (" (default)" if s["default"] else ""),
            str(s["size"]),
            ", ".join(f"{v:g}" for v in s["lr"]) + rule,
            ", ".join(f"{v:g}" for v in s["weight_decay"]),
            "; ".join(f"{k} {v}" for k, v in s["hparams"].items()) or "-",
            s["source"],
        )
    out.print(table)


def _dataset_rows() -> list[dict[str, Any]]:
    from bench.catalog import load_catalog

    return [
        {"name": card.name, "task": card.task, "classes": len(card.classes),
         "metric": card.primary_metric, "format": card.format, "epochs": card.epochs,
         "title": card.title}
        for card in load_catalog().values()
    ]  # fmt: skip


def _datasets(out, rows: list[dict[str, Any]]) -> None:
    table = wrapping_table(
        "datasets (`bench data info NAME`)",
        ("name", "task", "classes", "metric", "format", "epochs"),
        ("what it is",),
    )
    for d in rows:
        table.add_row(*(str(d[k]) for k in ("name", "task", "classes", "metric", "format",
                                             "epochs", "title")))  # fmt: skip
    out.print(table)


def _augmentation_rows() -> list[dict[str, Any]]:
    from bench.augmentations import AUGMENTATIONS, DEFAULT_AUGMENT

    return [
        {"name": name, "default": name == DEFAULT_AUGMENT, "summary": aug.summary}
        for name, aug in AUGMENTATIONS.items()
    ]


def _augmentations(out, rows: list[dict[str, Any]]) -> None:
    table = wrapping_table("augmentations (--augment)", ("name",), ("what it does",))
    for a in rows:
        table.add_row(a["name"] + (" (default)" if a["default"] else ""), a["summary"])
    out.print(table)


def _protocol_rows() -> list[dict[str, Any]]:
    from bench.protocols import get_protocol, list_protocols

    rows = []
    for name in list_protocols():
        p = get_protocol(name)
        rows.append({
            "name": name, "title": p.title, "methods": list(p.methods),
            "datasets": list(p.datasets), "shots": list(p.shots) if p.shots else None,
            "split_seeds": list(p.split_seeds) if p.split_seeds else None, "seeds": list(p.seeds),
        })  # fmt: skip
    return rows


def _protocols(out, rows: list[dict[str, Any]]) -> None:
    table = wrapping_table("protocols (--protocol, report --paper)", ("name",), ("what it runs",))
    for p in rows:
        shots = (
            f", {'/'.join(map(str, p['shots']))}-shot x {len(p['split_seeds'] or ())}"
            if p["shots"]
            else ""
        )
        table.add_row(
            p["name"],
            f"{p['title']}: {len(p['methods'])} methods x {len(p['datasets'])} datasets{shots}",
        )
    out.print(table)


def _backbones() -> list[str]:
    from bench.backbones import SUGGESTED_BACKBONES

    return list(SUGGESTED_BACKBONES)
