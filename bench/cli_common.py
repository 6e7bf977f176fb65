"""What every `bench` command shares: one way to print, one way to fail (a single `error:` line
on stderr and exit status 2, before any work starts)."""

from __future__ import annotations

import typer


def console():
    from rich.console import Console

    return Console(highlight=False)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
