"""`bench data info|check|download`: what a dataset card expects, and whether the local copy
matches it, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import fail
from bench.cli.complete import complete_datasets
from bench.cli.help import PlainHelpCommand, PlainHelpGroup
from bench.cli.options import DataRoot
from bench.console import console, progress_bar, table

data_app = typer.Typer(
    cls=PlainHelpGroup,
    help="Inspect, check and fetch the datasets of the catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@data_app.command(cls=PlainHelpCommand)
def info(
    name: Annotated[
        str,
        typer.Argument(
            help="A dataset of `bench list datasets`.", autocompletion=complete_datasets
        ),
    ],
    data_root: DataRoot = None,
) -> None:
    """The card: task, classes, metric, expected layout, where to get it, licence, citation; and
    whether the files are where the card expects them."""
    from bench.catalog import data_root as resolve_root
    from bench.catalog import get_card
    from bench.errors import UserError
    from bench.formats import get_format

    out = console()
    try:
        card = get_card(name)
    except UserError as exc:
        fail(str(exc))
    root = resolve_root(data_root)
    fmt = get_format(card.format)
    rows = [
        ("title", card.title),
        ("task", f"{card.task}, {len(card.classes)} {'labels' if card.multilabel else 'classes'}"),
        ("classes", ", ".join(card.classes)),
        ("primary metric", card.primary_metric),
        ("modality", card.modality),
        ("format", card.format),
        ("image size", f"{card.image_size} px" if card.image_size else "as stored"),
        ("epochs", str(card.epochs)),
        ("layout", card.layout),
        ("source", card.source),
        ("license", card.license),
        ("citation", card.citation),
        ("notes", card.notes),
        ("card", str(card.path)),
    ]
    if card.reader.get("shot_files"):
        rows.append(("few-shot files", ", ".join(card.reader["shot_files"].values())))
    try:
        fmt.check_available(card, root)
        rows.append(
            ("local copy", f"found under {card.folder(root)} (`bench data check` reads it)")
        )
        from bench.decoded_cache import describe

        rows.append(("decoded cache", describe(card, root) or ""))
    except UserError:
        rows.append(("local copy", f"not found: expected {fmt.location(card, root)} (see layout)"))
    fields = table(card.name, show_header=False)
    fields.add_column("field", no_wrap=True, style="bold")
    fields.add_column("value", overflow="fold")
    for key, value in rows:
        if value:
            fields.add_row(key, value)
    out.print(fields)


@data_app.command(cls=PlainHelpCommand)
def check(
    name: Annotated[
        str,
        typer.Argument(
            help="A dataset of `bench list datasets`.", autocompletion=complete_datasets
        ),
    ],
    data_root: DataRoot = None,
    shots: Annotated[
        str | None, typer.Option(help="Also check these few-shot samples, e.g. 1,5,10.")
    ] = None,
    split_seeds: Annotated[
        str | None, typer.Option(help="Few-shot split seeds to check: '0-4' (default 0).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Read every image and label as `bench run` will, and report errors (exit 2) and warnings."""
    from bench.catalog import data_root as resolve_root
    from bench.catalog import get_card
    from bench.config import parse_int_list
    from bench.data_check import check_dataset
    from bench.errors import UserError
    from bench.formats import SPLITS

    out = console()
    try:
        card = get_card(name)
        k = parse_int_list(shots, option="--shots") if shots else None
        seeds = parse_int_list(split_seeds, option="--split-seeds") if split_seeds else None
        with progress_bar(console=out, show=progress, elapsed=False) as bar:
            task = bar.add_task(f"reading {card.name}", total=None)
            report = check_dataset(
                card,
                resolve_root(data_root),
                shots=k,
                split_seeds=seeds,
                on_progress=lambda d, t: bar.update(task, completed=d, total=t),
            )
    except UserError as exc:
        fail(str(exc))
    unit = "positives per label" if card.multilabel else "images per class"
    counts = table(f"{card.name}: {unit}")
    counts.add_column("class", no_wrap=True)
    for split in SPLITS:
        counts.add_column(f"{split} ({report.sizes[split]})", justify="right")
    for i, cls in enumerate(card.classes):
        counts.add_row(cls, *(str(report.counts[s][i]) for s in SPLITS))
    out.print(counts)
    val = report.protocol.get("val")
    if val:
        out.print(
            f"val carved from train: {val['size']} images ({val['fraction']:.0%}, stratified, "
            f"seed {val['seed']}); the files have no validation split"
        )
    if report.protocol.get("groups"):
        out.print(
            f"groups: {report.protocol['groups']} (patient/study ids: each stays on one side of "
            "a carved val, and few-shot samples take distinct ones first)"
        )
    for k_, seed in report.shots_checked:
        out.print(f"{k_}-shot sample for split seed {seed}: ok")
    for warning in report.warnings:
        out.print(f"[yellow]warning[/] {warning}")
    out.print(f"[green]ok[/] {card.name}: every image and label read")


@data_app.command(cls=PlainHelpCommand)
def download(
    name: Annotated[
        str, typer.Argument(help="A MedMNIST dataset, e.g. pathmnist or pathmnist_224.")
    ],
    data_root: DataRoot = None,
) -> None:
    """Fetch a MedMNIST file through the `medmnist` package; other datasets need a registration
    or licence click, so this says where to get them."""
    from bench.catalog import data_root as resolve_root
    from bench.catalog import get_card
    from bench.errors import UserError
    from bench.formats import get_format

    try:
        card = get_card(name)
        path = get_format(card.format).download(card, resolve_root(data_root))
    except UserError as exc:
        fail(str(exc))
    typer.echo(f"{card.name}: {path}")


@data_app.command("pretrain-demo", cls=PlainHelpCommand)
def pretrain_demo(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Weights file to write (default: the cache, which runs then use "
            "instead of the weights the package ships)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Pretraining seed (the shipped weights: 0).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Rebuild the demo backbone's weights with the suite's own pretraining (75 s on two idle
    CPU cores), then linear-probe them against random initialisation on the demo task."""
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    from bench.demo_vit import demo_vit_path
    from bench.demo_vit_probe import pretrain_and_probe
    from bench.errors import UserError

    try:
        facts = pretrain_and_probe(out or demo_vit_path(), seed=seed, progress=progress)
    except UserError as exc:
        fail(str(exc))
    typer.echo(f"wrote {facts['path']} in {facts['seconds']:.0f} s")
    for p in facts["probe"]:
        typer.echo(
            f"demo seed {p['demo_seed']}: linear-probe test accuracy {p['pretrained']:.3f} "
            f"pretrained, {p['random_init']:.3f} at random initialisation"
        )
