"""Help text shown as written. typer renders help as rich markup, which takes bracketed text
such as '[default]' or '[none]' for a style tag and drops it; escaping every help string once,
when the command is built, keeps the brackets and the rich help panels."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

from bench.console import as_written


class PlainHelpCommand(TyperCommand):
    """A typer command whose help, short help and option help are escaped for rich markup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = as_written(self.help) if self.help else self.help
        self.short_help = as_written(self.short_help) if self.short_help else self.short_help
        for param in self.params:
            text = getattr(param, "help", None)
            if text:
                param.help = as_written(text)
