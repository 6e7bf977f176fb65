"""What every `bench` command shares: one way to fail (a single `error:` line on stderr and exit
status 2, before any work starts), one way to stop on an unsaved record, one grid request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer

# Options that define a grid; --protocol sets them all, so they cannot be given beside it.
GRID_OPTIONS = ("methods", "datasets", "seeds", "backbone", "epochs", "batch_size", "lr",
                "img_size", "shots", "split_seeds", "augment", "warmup_epochs",
                "grad_clip", "select")  # fmt: skip


@contextlib.contextmanager
def stop_when_unsaved() -> Iterator[None]:
    """A record the results folder could not take (`records.RecordNotSaved`) stops the command
    with one `error:` line saying where the record went, and exit status 1."""
    from bench.records import RecordNotSaved

    try:
        yield
    except RecordNotSaved as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters given on the command line or in its --config file (whose values are
    click's default map), not defaults or environment."""
    return {
        name
        for name in ctx.params
        # compared by name: typer may ship its own copy of click's enum
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "DEFAULT_MAP")
    }


def grid_clash(ctx: typer.Context) -> list[str]:
    """The grid options given beside --protocol (on the command line or in --config), as flags
    (--protocol sets the grid)."""
    given = given_options(ctx)
    return [f"--{name.replace('_', '-')}" for name in GRID_OPTIONS if name in given]


def parse_grid(
    *,
    methods: str,
    datasets: str,
    seeds: str,
    shots: str | None,
    split_seeds: str | None,
    set_: list[str] | None,
) -> dict[str, Any]:
    """The grid's lists parsed from the command-line strings (a UserError says which option is
    wrong), under GridRequest's field names."""
    from bench.config import parse_int_list, parse_name_list, parse_sets

    return {
        "methods": parse_name_list(methods),
        "datasets": parse_name_list(datasets),
        "seeds": parse_int_list(seeds, option="--seeds"),
        "shots": parse_int_list(shots, option="--shots") if shots else None,
        "split_seeds": (
            parse_int_list(split_seeds, option="--split-seeds") if split_seeds else None
        ),
        "sets": parse_sets(set_ or []),
    }


def checked_request(
    ctx: typer.Context,
    grid: dict[str, Any],
    protocol: str | None,
    *,
    no_pretrained: bool,
    data: bool,
    **settings: Any,
) -> tuple[Any, Any]:
    """(GridRequest, Protocol or None) of `bench run` and `bench status`, from their parsed grid
    options (`parse_grid`) and the rest as given, --protocol applied. The grid is checked first
    without torch (bench.precheck), so a typo fails at once: call this before anything imports
    bench.grid. `data`: the datasets' files must be on this machine (a local, real run)."""
    import dataclasses

    from bench.errors import UserError
    from bench.precheck import EarlyRequest, precheck
    from bench.protocols import apply_protocol, find_protocol

    paper = None
    if protocol is not None:
        given = grid_clash(ctx)
        if given:
            raise UserError(
                f"--protocol {protocol} sets the grid; drop {', '.join(given)} (or run without "
                "--protocol)"
            )
        paper = find_protocol(protocol)
    early = {f.name for f in dataclasses.fields(EarlyRequest)}
    precheck(
        EarlyRequest(
            **grid,
            pretrained=not no_pretrained,
            **{k: v for k, v in settings.items() if k in early},
        ),
        paper,
        data=data,
    )
    from bench.grid import GridRequest

    req = GridRequest(**grid, pretrained=not no_pretrained, **settings)
    if paper is not None:
        req = apply_protocol(paper, req).replace(protocol=protocol)
    return req, paper
