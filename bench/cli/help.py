"""Help text shown as written. typer renders help as rich markup, which takes bracketed text
such as '[default]' or '[none]' for a style tag and drops it; escaping every help string once,
when the command is built, keeps the brackets and the rich help panels. A flag takes no value,
so its help row shows none (typer would print `<bool>`), and `bench --help` lists the commands
in the order a user needs them."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

from bench.console import as_written

# `bench --help`: fetch data, see what exists, run or tune, follow, report, measure, export.
COMMAND_ORDER = ("data", "list", "run", "tune", "status", "report", "profile", "export")


def _no_flag_metavar(params: list[Any]) -> list[Any]:
    """The params, each flag given an empty metavar: typer shows a metavar in place of a type."""
    for param in params:
        # by attribute: typer may ship its own copy of click's Option
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class PlainHelpCommand(TyperCommand):
    """A typer command whose help, short help and option help are escaped for rich markup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = as_written(self.help) if self.help else self.help
        self.short_help = as_written(self.short_help) if self.short_help else self.short_help
        if self.help and not self.short_help:
            # the command list keeps a docstring's line breaks: its first paragraph on one line
            self.short_help = " ".join(self.help.split("\n\n")[0].split())
        for param in self.params:
            text = getattr(param, "help", None)
            if text:
                param.help = as_written(text)

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


class PlainHelpGroup(TyperGroup):
    """A typer group whose flags show no `<bool>` and whose commands are listed in
    COMMAND_ORDER (any other after them, as registered)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))
