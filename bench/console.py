"""Terminal output: the console, table builders and progress bars; the one module that
imports rich, so how the suite draws stays in one place."""

from __future__ import annotations

from collections.abc import Collection

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def console(*, stderr: bool = False) -> Console:
    """The console every command prints to (no automatic highlighting of numbers and paths)."""
    return Console(highlight=False, stderr=stderr)


def table(title: str | None = None, *, compact: bool = False, show_header: bool = True) -> Table:
    """An empty table; `compact`: light borders and shared padding, to fit 80 columns."""
    if compact:
        return Table(title=title, box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    return Table(title=title, show_header=show_header)


def wrapping_table(title: str, fixed: tuple[str, ...], wrapping: tuple[str, ...]) -> Table:
    """Names never wrap (they are what users type); descriptions take the remaining width."""
    out = Table(title=title)
    for col in fixed:
        out.add_column(col, no_wrap=True)
    for col in wrapping:
        out.add_column(col, overflow="fold", ratio=1)
    return out


def frame_table(title: str, frame, left: Collection[str]) -> Table:
    """A pandas DataFrame as a table: the `left` columns left-aligned, the rest (numbers) right."""
    out = Table(title=title)
    for col in frame.columns:
        out.add_column(str(col), justify="left" if col in left else "right")
    for row in frame.itertuples(index=False):
        out.add_row(*(str(v) for v in row))
    return out


def progress_bar(
    *,
    console: Console | None = None,
    show: bool = True,
    transient: bool = True,
    elapsed: bool = True,
    info: bool = False,
    label: str = "{task.description}",
    counter: str | None = None,
) -> Progress:
    """A progress bar: label, bar, done/total (or the `counter` template), the elapsed time when
    `elapsed`, and a task's `info` field when `info`; `show=False` draws nothing."""
    columns = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn() if counter is None else TextColumn(counter),
    ]
    if elapsed:
        columns.append(TimeElapsedColumn())
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, disable=not show, transient=transient)
