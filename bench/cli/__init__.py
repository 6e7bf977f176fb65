"""The `bench` command line: the typer app with one module per command. Heavy imports happen
inside the commands, so `bench --help` is instant."""

from __future__ import annotations

import importlib.metadata
import os
import sys

import typer

# torch numbers GPUs fastest-first by default, NVML by PCI bus: make them agree before any CUDA
# call, so the NVML memory and busy-process figures are about the GPU torch uses.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

from bench.cli.data import data_app
from bench.cli.export import export
from bench.cli.help import PlainHelpCommand, PlainHelpGroup
from bench.cli.list import list_
from bench.cli.profile import profile
from bench.cli.report import report
from bench.cli.run import run
from bench.cli.status import status

app = typer.Typer(
    name="bench",
    cls=PlainHelpGroup,
    help="Benchmark parameter-efficient fine-tuning of Vision Transformers on medical images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medpeft-bench {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


def package_version() -> str:
    """The installed distribution's version; the package's own in a checkout not installed."""
    try:
        return importlib.metadata.version("medpeft-bench")
    except importlib.metadata.PackageNotFoundError:
        import bench

        return bench.__version__


# Registered in the order `bench --help` lists them (PlainHelpGroup keeps it: typer would list
# the `data` group last).
app.add_typer(data_app, name="data")
app.command("list", cls=PlainHelpCommand)(list_)
app.command(cls=PlainHelpCommand)(run)
app.command(
    "tune",
    cls=PlainHelpCommand,
    help="Tune every method on validation with the same budget, then run the selected "
    "configuration at every seed (`bench run --tune`; the same options). Every trial is a "
    "record, so a stopped search resumes.",
)(run)
app.command(cls=PlainHelpCommand)(status)
app.command(cls=PlainHelpCommand)(report)
app.command(cls=PlainHelpCommand)(profile)
app.command(cls=PlainHelpCommand)(export)


def main() -> None:  # pragma: no cover
    sys.exit(app())
