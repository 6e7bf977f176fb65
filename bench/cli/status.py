"""`bench status`: a grid's progress from its records and claims (`bench.status`), as a table of
states per dataset and method and the cells that need a look."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bench.cli.options as o
from bench.cli.choices import Device
from bench.cli.common import (
    checked_request,
    fail,
    given_options,
    parse_grid,
)
from bench.console import console, table
from bench.status import STATES, Summary, expected_cells, summarise

# Options that do not choose a grid: with only these, status summarises the folder.
_NOT_GRID = {"results", "data_root", "config", "json_"}
_SHOWN = 10  # lines per list before "... and N more"
_LISTED = {"running": "cyan", "failed": "red", "oom": "red", "diverged": "red"}


def status(
    ctx: typer.Context,
    config: o.Config = None,
    results: o.ResultsIn = Path("results"),
    # the options --protocol sets (common.GRID_OPTIONS), then the rest of a cell's identity
    methods: o.Methods = "core",
    datasets: o.Datasets = "demo",
    seeds: o.Seeds = "0",
    backbone: o.Backbone = "demo-vit",
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = 32,
    lr: o.Lr = None,
    img_size: o.ImgSize = None,
    shots: o.Shots = None,
    split_seeds: o.SplitSeeds = None,
    augment: o.Augment = "rrc-flip",
    weights: o.Weights = None,
    no_pretrained: o.NoPretrained = False,
    device: Annotated[
        Device,
        typer.Option(
            help="auto: a cell run on CPU, GPU or MPS counts.",
            rich_help_panel=o.TRAINING,
        ),
    ] = "auto",
    precision: o.Precision = "auto",
    compile_: o.Compile = False,
    set_: o.Set = None,
    data_root: o.DataRoot = None,
    warmup_epochs: o.WarmupEpochs = 1.0,
    grad_clip: o.GradClip = 1.0,
    select: o.Select = "best",
    protocol: o.Protocol = None,
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help="The summary as one JSON document on stdout. Keys: results, grid (whether a "
            "grid was given), counts (each dataset, method, one count per state, total), total "
            "(per state, cells), cells (each dataset, method, state, where, detail), "
            "stale_claims, skipped (each path, what, blocks). States: " + ", ".join(STATES) + ".",
        ),
    ] = False,
) -> None:
    """Progress of a grid: done, failed, oom, diverged, running (claimed by a live runner) and
    missing cells per dataset and method. Give the grid as to `bench run` (or --protocol) to
    see what is missing; without grid options, summarise what the folder holds. Files that are
    not records are listed and left untouched."""
    from bench.errors import UserError

    grid = None
    try:
        if given_options(ctx) - _NOT_GRID:
            values = parse_grid(
                methods=methods, datasets=datasets, seeds=seeds, shots=shots,
                split_seeds=split_seeds, set_=set_,
            )  # fmt: skip
            # torch-free: a typo in the grid fails here, before bench.status imports the grid
            req, _ = checked_request(
                ctx, values, protocol, no_pretrained=no_pretrained, data=False, augment=augment,
                backbone=backbone, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr,
                img_size=img_size, compile=compile_, results=results, data_root=data_root,
                warmup_epochs=warmup_epochs, grad_clip=grad_clip, select=select,
            )  # fmt: skip
            grid = expected_cells(req, device, precision)
        elif not results.is_dir():
            raise UserError(
                f"no results folder {results}; pass --results, or the grid's options to see "
                "what it is missing"
            )
        summary = summarise(results, grid)
    except UserError as exc:
        fail(str(exc))
    if json_:
        from bench.cli.json_out import emit, status_json

        emit(status_json(summary, results))
        return
    _print(summary, results)


def _first_line(text: str, limit: int = 160) -> str:
    """An error's first line, cut short: the record holds the whole message."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print(summary: Summary, results: Path) -> None:
    out = console()
    states = STATES if summary.grid else STATES[:-1]
    what = f"{len(summary.cells)} cell(s) of the grid" if summary.grid else "what it holds"
    # light borders and shared padding: the whole table fits 80 columns
    counts_table = table(f"{results}: {what}", compact=True)
    counts = summary.counts()
    for i, name in enumerate(("dataset", "method")):
        width = max((len(key[i]) for key in counts), default=0)
        counts_table.add_column(name, no_wrap=True, min_width=max(width, len("total")))
    for s in (*states, "total"):
        counts_table.add_column(s, justify="right", no_wrap=True, min_width=len(s))
    for (block, method), row in counts.items():
        counts_table.add_row(block, method, *(str(row[s]) for s in states), str(sum(row.values())))
    total = summary.total()
    counts_table.add_row(
        "[bold]total[/]",
        "",
        *(f"[bold]{total[s]}[/]" for s in states),
        f"[bold]{len(summary.cells)}[/]",
    )
    out.print(counts_table)
    for state, colour in _LISTED.items():
        cells = [c for c in summary.cells if c.state == state]
        for c in cells[:_SHOWN]:
            detail = _first_line(c.detail)
            line = f"[{colour}]{state}[/] {c.where}" + (f": {detail}" if detail else "")
            out.print(line, soft_wrap=True)
        if len(cells) > _SHOWN:
            out.print(f"  ... and {len(cells) - _SHOWN} more {state}")
    if summary.stale_claims:
        out.print(
            f"[yellow]{summary.stale_claims} claim(s) left by runners that died[/]: the next "
            "`bench run` takes them over"
        )
    for path, what in summary.skipped:
        line = f"[yellow]skipped[/] {path}: {what}"
        if path in summary.blocking:
            line += (
                f"; it sits where the record of {summary.blocking[path]} goes, so `bench run` "
                "will not start until it is moved"
            )
        out.print(line, soft_wrap=True)  # a path broken over lines cannot be copied
    if summary.grid:
        out.print(
            f"{total['done']} of {len(summary.cells)} cell(s) done, {total['missing']} missing, "
            f"{total['running']} running"
        )
    else:
        out.print(f"{len(summary.cells)} cell(s) with a record or a live claim in {results}/")
